//! `CpuEngine`: steps a fixed list of tensors in place with the Rust kernel.
//! Built once by `radam.Adam` from one record per tensor (`radam._engine.TensorBuffers`);
//! `step` is the one native call of each step.

use numpy::{PyUntypedArray, PyUntypedArrayMethods};
use pyo3::exceptions::{PyOverflowError, PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::PyMapping;
use std::sync::{Mutex, PoisonError};

use super::arrays::{as_array, borrow_rw, stored, stored_mut, Compute, DType, Rw};
use super::config::PyAdamConfig;
use super::extents::WriteExtents;
use super::quant;
use super::rows::{read_grad, Read};
use crate::finite::all_finite_stored;
use crate::plumbing::StepCounts;
use crate::{
    check_mixed, check_rows, Buffer, Carry, Count, MixedTensorMut, Origin, State, StepError,
    StoredMut, Tensor,
};

/// One array the engine writes, with how messages name it.
struct Held {
    /// E.g. "params[0]" or "state['w']['exp_avg']".
    what: String,
    array: Py<PyUntypedArray>,
    dtype: DType,
    /// For codes (`DType::Codes`): the array of their scales, and how messages name it.
    absmax: Option<(String, Py<PyUntypedArray>)>,
}

impl Held {
    /// How messages name the arrays it holds, in the order of `Rw::extents`.
    fn names(&self) -> impl Iterator<Item = &String> {
        std::iter::once(&self.what).chain(self.absmax.as_ref().map(|(w, _)| w))
    }

    fn borrow<'py>(&self, py: Python<'py>) -> PyResult<Rw<'py>> {
        let absmax_what = || {
            self.absmax
                .as_ref()
                .map(|(w, _)| w.clone())
                .unwrap_or_default()
        };
        let absmax =
            (self.absmax.as_ref()).map(|(_, a)| (a.bind(py), &absmax_what as &dyn Fn() -> String));
        borrow_rw(
            self.array.bind(py),
            self.dtype,
            &|| self.what.clone(),
            absmax,
        )
    }
}

/// One tensor the engine steps: its arrays, checked at construction.
type Slot = Tensor<Held, ()>;

/// One tensor as Python passes it: a `radam._engine.TensorBuffers`, read by attribute.
#[derive(FromPyObject)]
struct Record<'py> {
    /// How messages name the tensor, e.g. "[0]" or "['w']".
    label: String,
    group: usize,
    param: Bound<'py, PyAny>,
    /// Its `opt.state` entry: name -> array.
    state: Bound<'py, PyAny>,
    /// Its position in the optimizer, over all groups (what stochastic rounding hashes).
    position: u64,
    /// The index, in that tensor, of the param's first element (a shard's start).
    offset: u64,
    /// The steps it has taken, and what the last carried (NAdam's `mu_product`).
    step: u64,
    carry: f64,
    /// How it keeps its moments, as `radam._formats` declares it.
    format: Format<'py>,
}

/// A state format (`radam._formats.StateFormat`), read by attribute: the binding
/// dispatches on its storage kind, never on an array's dtype.
#[derive(FromPyObject)]
struct Format<'py> {
    name: String,
    /// `"plain"` (one array per buffer, of the param's shape: its dtype is the
    /// arrays') or the kind of a codec's storage (`quant::KIND`).
    kind: String,
    /// Per buffer, its arrays (`StateArray`s): the first holds its values or codes.
    arrays: Vec<Bound<'py, PyAny>>,
    /// Elements per block of the arrays with one element per block.
    block: usize,
}

/// How a tensor's buffers are stored: `DType::Codes` (codes, then the array with
/// the key suffix given, one scale per block) or plain arrays of their own dtype.
fn storage(format: &Format<'_>, label: &str) -> PyResult<Option<(DType, String)>> {
    match format.kind.as_str() {
        "plain" => Ok(None),
        kind if quant::is_kind(kind) => {
            let scale = format.arrays.get(1).ok_or_else(|| {
                PyValueError::new_err(format!("state{label}: {} declares no absmax", format.name))
            })?;
            Ok(Some((DType::Codes, scale.getattr("suffix")?.extract()?)))
        }
        other => Err(PyValueError::new_err(format!(
            "state{label}: format {} has storage kind {other:?}, which the CPU engine has \
             no codec of",
            format.name
        ))),
    }
}

/// The state buffer Python names `name` (the core's names, but AdaMax's
/// `exp_avg_sq`, which `opt.state` calls `exp_inf`, as `torch.optim.Adamax` does).
fn state_buffer(name: &str) -> Option<Buffer> {
    if name == "exp_inf" {
        return Some(Buffer::ExpAvgSq);
    }
    Buffer::WRITTEN
        .into_iter()
        .find(|b| *b != Buffer::Param && b.name() == name)
}

/// A state array must have its param's shape, an allowed dtype, and be contiguous.
fn check_state(
    param: &Bound<'_, PyUntypedArray>,
    state: &Bound<'_, PyUntypedArray>,
    dtype: DType,
    what: &str,
) -> PyResult<()> {
    let got = match DType::of(state)? {
        None if dtype == DType::Codes => quant::holds_codes(state)?.then_some(DType::Codes),
        other => other,
    };
    if got != Some(dtype) || state.shape() != param.shape() {
        return Err(PyValueError::new_err(format!(
            "{what} must have its param's shape and the state dtype {}",
            dtype.name()
        )));
    }
    if !state.is_c_contiguous() {
        return Err(PyValueError::new_err(format!(
            "{what} must be C-contiguous"
        )));
    }
    Ok(())
}

/// The slot of one record, every array checked.
fn slot_of(record: Record<'_>) -> PyResult<Slot> {
    let label = record.label;
    if record.step > 0 && !(0.0..=1.0).contains(&record.carry) {
        return Err(PyValueError::new_err(format!(
            "params{label}: its carried mu_product {} is not in [0, 1]",
            record.carry
        )));
    }
    let param = as_array(&record.param, || format!("params{label}"))?;
    let param_dtype = DType::of(&param)?.ok_or_else(|| {
        PyTypeError::new_err(format!(
            "params{label} has dtype {}; radam updates float32, float64, float16 \
             and bfloat16 arrays",
            param.dtype()
        ))
    })?;
    if !param.is_c_contiguous() {
        return Err(PyValueError::new_err(format!(
            "params{label} must be C-contiguous"
        )));
    }
    let stored = storage(&record.format, &label)?;
    let scale_suffix = stored.as_ref().map(|(_, suffix)| suffix.as_str());
    let entries = record.state.cast::<PyMapping>()?.items()?;
    let mut arrays: Vec<(Buffer, String, Bound<'_, PyUntypedArray>)> = Vec::new();
    let mut scales: Vec<(Buffer, String, Bound<'_, PyUntypedArray>)> = Vec::new();
    for item in entries.iter() {
        let (name, array): (String, Bound<'_, PyAny>) = item.extract()?;
        let what = format!("state{label}['{name}']");
        let (base, list) = match scale_suffix.and_then(|suffix| name.strip_suffix(suffix)) {
            Some(base) => (base, &mut scales),
            None => (name.as_str(), &mut arrays),
        };
        let is_scale = base.len() < name.len();
        let buffer = state_buffer(base)
            .filter(|b| !(is_scale && *b == Buffer::MasterParam))
            .ok_or_else(|| {
                PyValueError::new_err(format!("{what}: radam keeps no state of that name"))
            })?;
        let array = as_array(&array, || what.clone())?;
        list.push((buffer, what, array));
    }
    let first = |buffer: Buffer| arrays.iter().find(|(b, _, _)| *b == buffer);
    let scale_of = |buffer: Buffer| scales.iter().find(|(b, _, _)| *b == buffer);
    let lacks = |buffer: Buffer| {
        PyValueError::new_err(format!(
            "state{label} lacks {:?}, which every tensor has",
            buffer.name()
        ))
    };
    let exp_avg = first(Buffer::ExpAvg).ok_or_else(|| lacks(Buffer::ExpAvg))?;
    let state_dtype = match &stored {
        Some((dtype, _)) => *dtype,
        None => DType::of(&exp_avg.2)?.unwrap_or(DType::F32),
    };
    let allowed = if param_dtype.computes_in_f64() {
        state_dtype == DType::F64
    } else {
        state_dtype != DType::F64
    };
    if let Some((_, what, _)) = scales.iter().find(|(b, _, _)| first(*b).is_none()) {
        return Err(PyValueError::new_err(format!(
            "{what} is the absmax of 8-bit state, which state{label} does not hold"
        )));
    }
    if !allowed {
        return Err(PyTypeError::new_err(format!(
            "state{label} has dtype {state_dtype:?}, which does not go with a \
             {param_dtype:?} param"
        )));
    }
    let held = |buffer: Buffer| -> PyResult<Option<Held>> {
        let Some((_, what, array)) = first(buffer) else {
            return Ok(None);
        };
        let dtype = match buffer {
            Buffer::MasterParam => DType::F32,
            _ => state_dtype,
        };
        check_state(&param, array, dtype, what)?;
        let absmax = match dtype {
            DType::Codes => {
                let Some((_, scale_what, scale)) = scale_of(buffer) else {
                    return Err(PyValueError::new_err(format!(
                        "state{label} lacks the absmax of {what} ('{}{}'), which \
                         8-bit state has",
                        buffer.name(),
                        scale_suffix.unwrap_or_default(),
                    )));
                };
                quant::check_scales(param.len(), record.format.block, scale, scale_what)?;
                Some((scale_what.clone(), scale.clone().unbind()))
            }
            _ => None,
        };
        Ok(Some(Held {
            what: what.clone(),
            array: array.clone().unbind(),
            dtype,
            absmax,
        }))
    };
    let present = |buffer: Buffer| held(buffer)?.ok_or_else(|| lacks(buffer));
    let master_param = held(Buffer::MasterParam)?;
    if master_param.is_some() && !matches!(param_dtype, DType::F16 | DType::Bf16) {
        return Err(PyValueError::new_err(format!(
            "params{label}: a master copy is for float16 and bfloat16 params"
        )));
    }
    let state = State {
        exp_avg: present(Buffer::ExpAvg)?,
        exp_avg_sq: present(Buffer::ExpAvgSq)?,
        max_exp_avg_sq: held(Buffer::MaxExpAvgSq)?,
        velocity: held(Buffer::Velocity)?,
    };
    Ok(Tensor {
        param: Held {
            what: format!("params{label}"),
            array: param.unbind(),
            dtype: param_dtype,
            absmax: None,
        },
        grad: (),
        master_param,
        state,
        group: record.group,
        origin: Some(Origin {
            tensor: record.position,
            element: record.offset,
        }),
    })
}

/// Steps a fixed list of tensors in place with the Rust kernel: params of
/// float32, float64, float16 or bfloat16, state of float32/float64 or 16 bits.
#[pyclass(module = "radam._core", frozen)]
pub(super) struct CpuEngine {
    slots: Vec<Slot>,
    /// Each slot's label, as the records gave it.
    labels: Vec<String>,
    /// The bytes every step writes, sorted, to check each grad against.
    writes: Mutex<WriteExtents>,
    /// Each slot's step count (a slot without a grad in a step keeps its own).
    counts: Mutex<StepCounts>,
    /// Per slot, whether its state holds `max_exp_avg_sq` and `velocity`: read
    /// at every step, so kept apart from the slots (several cache lines each).
    optional: Vec<(bool, bool)>,
    /// How many slots compute in float64.
    f64_slots: usize,
}

impl CpuEngine {
    /// How messages name write number `index` (in [`Tensor::written`]'s order, slot by slot).
    fn write_name(&self, index: usize) -> String {
        let written = self.slots.iter().flat_map(|s| s.written());
        let mut names = written.flat_map(|(_, h)| h.names());
        names
            .nth(index)
            .map_or_else(|| format!("written array {index}"), Clone::clone)
    }

    /// A core error about tensor `i` of a list stepped together (`slots[i]`
    /// is its slot), with the tensor and its buffer named as users name them.
    fn step_error(&self, e: StepError, slots: &[usize]) -> PyErr {
        // The core names a tensor by its position in its list.
        let nth = |i: usize| {
            let slot = *slots.get(i)?;
            Some((&self.slots[slot], &self.labels[slot]))
        };
        match e {
            StepError::LengthMismatch {
                index,
                buffer,
                expected,
                got,
            } => {
                let Some((slot, label)) = nth(index) else {
                    return PyValueError::new_err(e.to_string());
                };
                let named = |b: &Buffer| b.name() == buffer || quant::names_scales(*b, buffer);
                let what = match Buffer::WRITTEN.into_iter().find(named) {
                    Some(b) => slot.get(b).map_or(buffer.to_string(), |h| {
                        let absmax = h.absmax.as_ref().filter(|_| b.name() != buffer);
                        absmax.map_or(&h.what, |(w, _)| w).clone()
                    }),
                    None => format!("grads{label}"),
                };
                PyValueError::new_err(format!(
                    "{what} has {got} elements but params{label} has {expected}"
                ))
            }
            StepError::RoundingNot16Bit { index } => {
                let label = nth(index).map_or("[?]", |(_, l)| l.as_str());
                PyValueError::new_err(format!(
                    "params{label}: stochastic_rounding is for bfloat16 and float16 params \
                     without master weights"
                ))
            }
            StepError::MissingBuffer { index, buffer } => {
                let label = nth(index).map_or("[?]", |(_, l)| l.as_str());
                PyValueError::new_err(format!(
                    "params{label}: its group's options need a {buffer} buffer, which its \
                     state lacks"
                ))
            }
            other => PyValueError::new_err(other.to_string()),
        }
    }
}

/// The kernel's view of one tensor's written buffers, in compute type `T`,
/// from their write borrows.
fn core_buffers<'a, T: Compute>(
    writes: &'a mut Tensor<Rw<'_>, ()>,
) -> PyResult<Tensor<StoredMut<'a, T>, ()>> {
    writes
        .as_mut()
        .try_map(|_, rw| stored_mut::<T>(rw), |_| Ok(()))
}

/// The kernel's view of one tensor, in compute type `T`, from its write
/// borrows and its grad's read borrow.
fn core_tensor<'a, T: Compute>(
    writes: &'a mut Tensor<Rw<'_>, ()>,
    grad: &'a super::arrays::Ro<'_>,
) -> PyResult<MixedTensorMut<'a, T>> {
    // Mapped here, not through `core_buffers`: through it, `try_map` stayed a
    // call whose large result was copied, a cost per tensor of every step.
    let buffers = writes
        .as_mut()
        .try_map(|_, rw| stored_mut::<T>(rw), |_| Ok(()))?;
    Ok(buffers.with_grad(stored(grad)?))
}

/// A row-sparse grad was read but not coalesced (cannot happen: one per `Read::Rows`).
fn lost_rows() -> PyErr {
    PyValueError::new_err("a row-sparse gradient was lost between its checks")
}

/// A core error about table `index` of a row-sparse list whose tensors
/// `labels` name, as users name it.
fn row_error(e: StepError, labels: &[&str]) -> PyErr {
    let label = |index: usize| labels.get(index).copied().unwrap_or("[?]");
    if let Some(err) = quant::row_error(&e, label) {
        return err;
    }
    match e {
        StepError::RowOutOfRange { .. } | StepError::RowValues { .. } => {
            PyValueError::new_err(e.to_string())
        }
        other => PyValueError::new_err(format!("params{}: {other}", {
            let index = match other {
                StepError::LengthMismatch { index, .. }
                | StepError::MissingBuffer { index, .. }
                | StepError::RoundingNot16Bit { index }
                | StepError::MasterNotNative { index }
                | StepError::GroupOutOfRange { index, .. }
                | StepError::RowTable { index, .. } => index,
                _ => usize::MAX,
            };
            label(index)
        })),
    }
}

#[pymethods]
impl CpuEngine {
    /// One record per tensor: its label (how messages name it, e.g. "[0]" or
    /// "['w']"), the index of its parameter group, its param, its position in
    /// the optimizer and the offset of its first element there, and its state
    /// (name -> array, as `opt.state` holds it: `exp_avg`, `exp_avg_sq` or
    /// AdaMax's `exp_inf`, and when used `max_exp_avg_sq`, `velocity`, and
    /// `master_param`, the float32 master copy of a 16-bit param).
    #[new]
    fn new(tensors: Vec<Record<'_>>) -> PyResult<Self> {
        let labels = tensors.iter().map(|r| r.label.clone()).collect();
        let counts = StepCounts::new(tensors.iter().map(|r| {
            let count = Count {
                steps: r.step,
                carry: Carry {
                    mu_product: if r.step == 0 { 1.0 } else { r.carry },
                },
            };
            (r.group, count)
        }));
        let slots = tensors
            .into_iter()
            .map(slot_of)
            .collect::<PyResult<Vec<Slot>>>()?;
        Ok(CpuEngine {
            f64_slots: slots
                .iter()
                .filter(|s| s.param.dtype.computes_in_f64())
                .count(),
            optional: (slots.iter())
                .map(|s| (s.state.max_exp_avg_sq.is_some(), s.state.velocity.is_some()))
                .collect(),
            slots,
            labels,
            writes: Mutex::new(WriteExtents::default()),
            counts: Mutex::new(counts),
        })
    }

    /// One step of every slot whose grad is not None, each at its own step
    /// count, with each group's options (`AdamConfig`); a slot whose grad is
    /// None is left as it is, its count too. Returns False when
    /// `skip_nonfinite` found a NaN or Inf in a gradient (then nothing was
    /// written). Every check runs before any element is written; on error
    /// nothing changed.
    #[pyo3(signature = (grads, configs, skip_nonfinite=false))]
    fn step(
        &self,
        py: Python<'_>,
        grads: Vec<Bound<'_, PyAny>>,
        configs: Vec<Bound<'_, PyAdamConfig>>,
        skip_nonfinite: bool,
    ) -> PyResult<bool> {
        if grads.len() != self.slots.len() {
            return Err(PyValueError::new_err(format!(
                "expected {} grads (one per param), got {}",
                self.slots.len(),
                grads.len()
            )));
        }
        let mut counts = self.counts.lock().unwrap_or_else(PoisonError::into_inner);
        let stepped: Vec<usize> = (0..grads.len()).filter(|&i| !grads[i].is_none()).collect();
        let configs: Vec<_> = configs.iter().map(|c| c.get().0).collect();
        let plan = counts
            .plan(&configs, &stepped)
            .map_err(|(group, e)| match e {
                StepError::StepOverflow => {
                    let at = (stepped.iter())
                        .find(|&&i| counts.group(i) == group && counts.get(i).steps == u64::MAX);
                    let label = at.map_or("[?]", |&i| self.labels[i].as_str());
                    PyOverflowError::new_err(format!(
                        "params{label}: the step count is {}: the kernel counts steps in 64 bits, \
                         and {} is its last",
                        u64::MAX,
                        u64::MAX
                    ))
                }
                StepError::GroupOutOfRange { .. } => PyValueError::new_err(format!(
                    "expected options for every group, got {}",
                    configs.len()
                )),
                e => PyValueError::new_err(format!("param_groups[{group}]: {e}")),
            })?;
        let index = plan.indices(&counts);
        for (&i, &index) in stepped.iter().zip(index) {
            let ((max_exp_avg_sq, velocity), s) = (self.optional[i], &plan.scalars[index]);
            if (s.amsgrad && !max_exp_avg_sq) || (s.velocity && !velocity) {
                return Err(PyValueError::new_err(format!(
                    "params{}: its group's options do not match the optimizer's state",
                    self.labels[i]
                )));
            }
        }
        // Every write borrow first, then the bytes they cover (sorted, and
        // checked disjoint), then the grads, each checked against those bytes.
        let mut extents = self.writes.lock().unwrap_or_else(PoisonError::into_inner);
        extents.begin();
        let mut writes = Vec::with_capacity(self.slots.len());
        for slot in &self.slots {
            let w = slot.as_ref().try_map(|_, h| h.borrow(py), |_| Ok(()))?;
            w.written()
                .flat_map(|(_, a)| a.extents())
                .for_each(|e| extents.push(e));
            writes.push(w);
        }
        extents.settle().map_err(|(first, second)| {
            PyValueError::new_err(format!(
                "{} shares memory with {}; the optimizer writes both, so each must be \
                 its own array",
                self.write_name(second),
                self.write_name(first)
            ))
        })?;
        let overlaps = |extent| extents.overlapping(extent).map(|i| self.write_name(i));
        let mut reads = Vec::with_capacity(stepped.len());
        for &i in &stepped {
            let (slot, label, grad, w) = (&self.slots[i], &self.labels[i], &grads[i], &writes[i]);
            let what = || format!("grads{label}");
            let shape = w.param.shape();
            reads.push(read_grad(grad, slot.param.dtype, shape, &what, &overlaps)?);
        }
        drop(extents);
        // The row-sparse grads, coalesced (each checked against its param).
        let (mut g32, mut g64) = (Vec::new(), Vec::new());
        for (&i, read) in stepped.iter().zip(&reads) {
            if let Read::Rows(rows) = read {
                let what = format!("grads{}", self.labels[i]);
                if self.slots[i].param.dtype.computes_in_f64() {
                    g64.push(rows.grad::<f64>(&what)?);
                } else {
                    g32.push(rows.grad::<f32>(&what)?);
                }
            }
        }
        // The tensors computed in float32 and in float64, each list in slot
        // order, the dense ones and the row-sparse ones apart, each tensor's
        // `group` the index of its scalars in the plan.
        let (mut t32, mut t64) = (
            Vec::with_capacity(stepped.len().min(self.slots.len() - self.f64_slots)),
            Vec::with_capacity(stepped.len().min(self.f64_slots)),
        );
        let (mut r32, mut r64) = (Vec::new(), Vec::new());
        let (mut rows32, mut rows64) = (g32.iter(), g64.iter());
        // `stepped` is in slot order: its slots' write borrows, in that order.
        let stepped_writes = (writes.iter_mut().enumerate()).filter(|(i, _)| !grads[*i].is_none());
        for (((i, w), read), &index) in stepped_writes.zip(&reads).zip(index) {
            w.group = index;
            let in_f64 = self.slots[i].param.dtype.computes_in_f64();
            match read {
                Read::Dense(grad) if in_f64 => {
                    t64.push(core_tensor::<f64>(w, grad)?);
                }
                Read::Dense(grad) => {
                    t32.push(core_tensor::<f32>(w, grad)?);
                }
                Read::Rows(_) if in_f64 => {
                    let grad = rows64.next().ok_or_else(lost_rows)?;
                    r64.push(core_buffers::<f64>(w)?.with_grad(grad));
                }
                Read::Rows(_) => {
                    let grad = rows32.next().ok_or_else(lost_rows)?;
                    r32.push(core_buffers::<f32>(w)?.with_grad(grad));
                }
            }
        }
        // The slots of one of those lists, in its order, which its errors name
        // (found only then: a step that succeeds never needs them).
        let list = |in_f64: bool, rows: bool| -> Vec<usize> {
            (stepped.iter().zip(&reads))
                .filter(|(&i, read)| {
                    self.slots[i].param.dtype.computes_in_f64() == in_f64
                        && matches!(read, Read::Rows(_)) == rows
                })
                .map(|(&i, _)| i)
                .collect()
        };
        let labels = |slots: Vec<usize>| -> Vec<&str> {
            slots.iter().map(|&i| self.labels[i].as_str()).collect()
        };
        // Every list is checked before any is stepped: an error writes nothing.
        let scalars = &plan.scalars;
        let t32 = check_mixed(t32, scalars).map_err(|e| self.step_error(e, &list(false, false)))?;
        let t64 = check_mixed(t64, scalars).map_err(|e| self.step_error(e, &list(true, false)))?;
        let r32 = check_rows(r32, scalars).map_err(|e| row_error(e, &labels(list(false, true))))?;
        let r64 = check_rows(r64, scalars).map_err(|e| row_error(e, &labels(list(true, true))))?;
        let stepped_all = py.detach(|| {
            if skip_nonfinite {
                let g32: Vec<_> = (t32.tensors().iter().map(|t| t.grad))
                    .chain(r32.grads().flat_map(|g| g.parts()))
                    .collect();
                let g64: Vec<_> = (t64.tensors().iter().map(|t| t.grad))
                    .chain(r64.grads().flat_map(|g| g.parts()))
                    .collect();
                if !(all_finite_stored(&g32) && all_finite_stored(&g64)) {
                    return false;
                }
            }
            t32.step();
            t64.step();
            r32.step();
            r64.step();
            true
        });
        if stepped_all {
            counts.advance(&stepped, plan);
        }
        Ok(stepped_all)
    }

    /// Each slot's step count and what its last step carried (NAdam's
    /// `mu_product`; 1 before its first step).
    fn counts(&self) -> (Vec<u64>, Vec<f64>) {
        let counts = self.counts.lock().unwrap_or_else(PoisonError::into_inner);
        (0..counts.len())
            .map(|i| counts.get(i))
            .map(|c| (c.steps, c.carry.mu_product))
            .unzip()
    }

    /// The host arrays are the ones stepped: nothing to copy (the engine
    /// contract's `sync`, which the GPU engine needs).
    fn sync(&self) {}

    /// The number of tensors.
    fn __len__(&self) -> usize {
        self.slots.len()
    }
}
