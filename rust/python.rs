//! The PyO3 bindings (`radam._core`). They only extract, check and dispatch:
//! every array is borrowed through rust-numpy's checked borrows (so aliasing
//! and read-only arrays are Python errors, never panics), every check runs
//! before any element is written, and the GIL is released while the kernel runs.

use numpy::{
    BorrowError, Element, PyArrayDescrMethods, PyArrayDyn, PyArrayMethods, PyReadonlyArrayDyn,
    PyReadwriteArrayDyn, PyUntypedArray, PyUntypedArrayMethods,
};
use pyo3::exceptions::{PyRuntimeError, PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::PyAnyMethods;

use crate::{
    all_finite, step_tensors, AdamConfig, Algorithm, BiasCorrection, Carry, Float, SimdLevel,
    StepScalars, TensorMut,
};

/// The options of one group as Python passes them: a `radam._options.EngineOptions`
/// named tuple, read by attribute.
#[derive(FromPyObject)]
struct GroupOptions {
    lr: f64,
    beta1: f64,
    beta2: f64,
    eps: f64,
    weight_decay: f64,
    decoupled_weight_decay: bool,
    amsgrad: bool,
    maximize: bool,
    efficient_form: bool,
    beta1_decay: f64,
    momentum: f64,
    nesterov: bool,
    max_gradient_elem: f64,
    max_gradient_norm: f64,
    bias_correction: String,
    algorithm: String,
    momentum_decay: f64,
    grad_scale: f64,
}

fn config_of(o: GroupOptions) -> PyResult<AdamConfig> {
    let bias_correction = match o.bias_correction.as_str() {
        "adam" => BiasCorrection::Adam,
        "downhill-0.4.0" => BiasCorrection::Downhill040,
        other => return Err(PyValueError::new_err(format!("unknown bias_correction {other:?}"))),
    };
    let algorithm = match o.algorithm.as_str() {
        "adam" => Algorithm::Adam,
        "adamax" => Algorithm::Adamax,
        "nadam" => Algorithm::NAdam,
        "radam" => Algorithm::RAdam,
        other => return Err(PyValueError::new_err(format!("unknown algorithm {other:?}"))),
    };
    Ok(AdamConfig {
        lr: o.lr,
        beta1: o.beta1,
        beta2: o.beta2,
        eps: o.eps,
        weight_decay: o.weight_decay,
        decoupled_weight_decay: o.decoupled_weight_decay,
        amsgrad: o.amsgrad,
        maximize: o.maximize,
        efficient_form: o.efficient_form,
        beta1_decay: o.beta1_decay,
        momentum: o.momentum,
        nesterov: o.nesterov,
        max_gradient_elem: o.max_gradient_elem,
        max_gradient_norm: o.max_gradient_norm,
        bias_correction,
        algorithm,
        momentum_decay: o.momentum_decay,
        grad_scale: o.grad_scale,
    })
}

/// Raise `ValueError` naming the first bad option of a group (an `EngineOptions`).
#[pyfunction]
fn validate_options(options: GroupOptions) -> PyResult<()> {
    config_of(options)?
        .validate()
        .map_err(|e| PyValueError::new_err(e.to_string()))
}

/// The SIMD instruction set the kernels run with on this CPU.
#[pyfunction]
fn simd_level() -> &'static str {
    SimdLevel::detect().name()
}

/// The number of threads a step may use (rayon's pool; set `RAYON_NUM_THREADS` to change it).
#[pyfunction]
fn num_threads() -> usize {
    crate::num_threads()
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum DType {
    F32,
    F64,
}

impl DType {
    fn of(array: &Bound<'_, PyUntypedArray>) -> Option<DType> {
        let py = array.py();
        let dtype = array.dtype();
        if dtype.is_equiv_to(&numpy::dtype::<f32>(py)) {
            Some(DType::F32)
        } else if dtype.is_equiv_to(&numpy::dtype::<f64>(py)) {
            Some(DType::F64)
        } else {
            None
        }
    }
}

/// One tensor the engine steps: its param and state arrays, checked at construction.
struct Slot {
    label: String,
    dtype: DType,
    group: usize,
    param: Py<PyUntypedArray>,
    exp_avg: Py<PyUntypedArray>,
    exp_avg_sq: Py<PyUntypedArray>,
    max_exp_avg_sq: Option<Py<PyUntypedArray>>,
    velocity: Option<Py<PyUntypedArray>>,
}

fn as_array<'py>(
    obj: &Bound<'py, PyAny>,
    what: impl Fn() -> String,
) -> PyResult<Bound<'py, PyUntypedArray>> {
    obj.cast::<PyUntypedArray>().cloned().map_err(|_| {
        let type_name = obj
            .get_type()
            .name()
            .map(|n| n.to_string())
            .unwrap_or_default();
        PyTypeError::new_err(format!(
            "{} must be a numpy.ndarray, got {type_name}",
            what()
        ))
    })
}

/// A state array must match its param exactly and be writable in place.
fn check_state(
    param: &Bound<'_, PyUntypedArray>,
    state: &Bound<'_, PyUntypedArray>,
    what: &str,
) -> PyResult<()> {
    if !state.dtype().is_equiv_to(&param.dtype()) || state.shape() != param.shape() {
        return Err(PyValueError::new_err(format!(
            "{what} must have the dtype and shape of its param"
        )));
    }
    if !state.is_c_contiguous() {
        return Err(PyValueError::new_err(format!(
            "{what} must be C-contiguous"
        )));
    }
    Ok(())
}

/// The gradient as the kernel reads it: the array's own memory, or a
/// C-ordered copy when the array is not C-contiguous.
enum Grad<'py, T: Element> {
    View(PyReadonlyArrayDyn<'py, T>),
    Copied(Vec<T>),
}

impl<T: Element> Grad<'_, T> {
    fn as_slice(&self) -> &[T] {
        match self {
            // Contiguity was checked when the view was chosen.
            Grad::View(view) => view.as_slice().unwrap_or(&[]),
            Grad::Copied(copy) => copy,
        }
    }
}

/// The borrows of one tensor, held while the kernel runs.
struct Borrowed<'py, T: Element> {
    param: PyReadwriteArrayDyn<'py, T>,
    exp_avg: PyReadwriteArrayDyn<'py, T>,
    exp_avg_sq: PyReadwriteArrayDyn<'py, T>,
    max_exp_avg_sq: Option<PyReadwriteArrayDyn<'py, T>>,
    velocity: Option<PyReadwriteArrayDyn<'py, T>>,
    grad: Grad<'py, T>,
    group: usize,
}

/// `what` names the array in messages; it is only formatted on error.
fn borrow_rw<'py, T: Element>(
    array: &Bound<'py, PyUntypedArray>,
    what: impl Fn() -> String,
) -> PyResult<PyReadwriteArrayDyn<'py, T>> {
    let typed = array.cast::<PyArrayDyn<T>>().map_err(|_| {
        PyTypeError::new_err(format!(
            "{} changed dtype after the optimizer was built",
            what()
        ))
    })?;
    let borrowed = typed.try_readwrite().map_err(|e| match e {
        BorrowError::NotWriteable => PyValueError::new_err(format!(
            "{} is read-only; the optimizer updates it in place",
            what()
        )),
        _ => PyValueError::new_err(format!(
            "{} is already in use: it shares memory with another param or state array, \
             or another thread is stepping it",
            what()
        )),
    })?;
    if !borrowed.is_c_contiguous() {
        return Err(PyValueError::new_err(format!(
            "{} is no longer C-contiguous",
            what()
        )));
    }
    Ok(borrowed)
}

/// Take every borrow of the tensors of one dtype (in slot order), checking each grad.
fn borrow_all<'py, T: Element + Float>(
    py: Python<'py>,
    slots: &[Slot],
    grads: &[Bound<'py, PyAny>],
    dtype: DType,
) -> PyResult<Vec<Borrowed<'py, T>>> {
    let mut out = Vec::new();
    // Params and state first, so a grad that aliases any of them fails its borrow below.
    for (index, slot) in slots.iter().enumerate().filter(|(_, s)| s.dtype == dtype) {
        let label = &slot.label;
        let optional = |array: &Option<Py<PyUntypedArray>>, name: &str| match array {
            Some(a) => borrow_rw(a.bind(py), || format!("state{label}['{name}']")).map(Some),
            None => Ok(None),
        };
        let max_exp_avg_sq = optional(&slot.max_exp_avg_sq, "max_exp_avg_sq")?;
        let velocity = optional(&slot.velocity, "velocity")?;
        out.push((
            borrow_rw(slot.param.bind(py), || format!("params{label}"))?,
            borrow_rw(slot.exp_avg.bind(py), || format!("state{label}['exp_avg']"))?,
            borrow_rw(slot.exp_avg_sq.bind(py), || {
                format!("state{label}['exp_avg_sq']")
            })?,
            max_exp_avg_sq,
            velocity,
            index,
        ));
    }
    let mut borrowed = Vec::with_capacity(out.len());
    for (param, exp_avg, exp_avg_sq, max_exp_avg_sq, velocity, index) in out {
        let slot = &slots[index];
        let what = || format!("grads{}", slot.label);
        let grad = as_array(&grads[index], what)?;
        let typed = grad.cast::<PyArrayDyn<T>>().map_err(|_| {
            PyTypeError::new_err(format!(
                "{} has dtype {} but its param has dtype {}; radam never casts, pass a {} array",
                what(),
                grad.dtype(),
                T::NAME,
                T::NAME
            ))
        })?;
        if typed.shape() != param.shape() {
            return Err(PyValueError::new_err(format!(
                "{} has shape {:?} but its param has shape {:?}",
                what(),
                typed.shape(),
                param.shape()
            )));
        }
        let view = typed.try_readonly().map_err(|_| {
            PyValueError::new_err(format!(
                "{} shares memory with a param or optimizer state; pass a separate gradient array",
                what()
            ))
        })?;
        let grad = if view.is_c_contiguous() {
            Grad::View(view)
        } else {
            Grad::Copied(view.as_array().iter().copied().collect())
        };
        borrowed.push(Borrowed {
            param,
            exp_avg,
            exp_avg_sq,
            max_exp_avg_sq,
            velocity,
            grad,
            group: slot.group,
        });
    }
    Ok(borrowed)
}

fn views<'a, T: Element>(borrowed: &'a mut [Borrowed<'_, T>]) -> PyResult<Vec<TensorMut<'a, T>>> {
    let contiguous = |_| PyValueError::new_err("an array is not contiguous");
    borrowed
        .iter_mut()
        .map(|b| {
            Ok(TensorMut {
                param: b.param.as_slice_mut().map_err(contiguous)?,
                grad: b.grad.as_slice(),
                exp_avg: b.exp_avg.as_slice_mut().map_err(contiguous)?,
                exp_avg_sq: b.exp_avg_sq.as_slice_mut().map_err(contiguous)?,
                max_exp_avg_sq: match &mut b.max_exp_avg_sq {
                    Some(x) => Some(x.as_slice_mut().map_err(contiguous)?),
                    None => None,
                },
                velocity: match &mut b.velocity {
                    Some(x) => Some(x.as_slice_mut().map_err(contiguous)?),
                    None => None,
                },
                group: b.group,
            })
        })
        .collect()
}

/// Steps a fixed list of float32/float64 tensors in place with the Rust kernel.
/// Built once by `radam.Adam`; `step` is the one native call of each step.
#[pyclass(module = "radam._core", frozen)]
struct CpuEngine {
    slots: Vec<Slot>,
}

#[pymethods]
impl CpuEngine {
    /// `labels[i]` is how messages name tensor i (e.g. "[0]" or "['w']");
    /// `groups[i]` is the index of its parameter group. `exp_avg_sqs` holds
    /// AdaMax's infinity norm for AdaMax groups.
    #[new]
    #[pyo3(signature = (labels, params, exp_avgs, exp_avg_sqs, max_exp_avg_sqs, velocities, groups))]
    fn new(
        labels: Vec<String>,
        params: Vec<Bound<'_, PyAny>>,
        exp_avgs: Vec<Bound<'_, PyAny>>,
        exp_avg_sqs: Vec<Bound<'_, PyAny>>,
        max_exp_avg_sqs: Vec<Option<Bound<'_, PyAny>>>,
        velocities: Vec<Option<Bound<'_, PyAny>>>,
        groups: Vec<usize>,
    ) -> PyResult<Self> {
        let n = params.len();
        if [
            labels.len(),
            exp_avgs.len(),
            exp_avg_sqs.len(),
            max_exp_avg_sqs.len(),
            velocities.len(),
            groups.len(),
        ]
        .iter()
        .any(|&len| len != n)
        {
            return Err(PyValueError::new_err(
                "labels, params, states and groups must have one entry per tensor",
            ));
        }
        let mut slots = Vec::with_capacity(n);
        for (i, label) in labels.into_iter().enumerate() {
            let param = as_array(&params[i], || format!("params{label}"))?;
            let dtype = DType::of(&param).ok_or_else(|| {
                PyTypeError::new_err(format!(
                    "params{label} has dtype {}; radam.Adam updates float32 and float64 arrays",
                    param.dtype()
                ))
            })?;
            if !param.is_c_contiguous() {
                return Err(PyValueError::new_err(format!(
                    "params{label} must be C-contiguous"
                )));
            }
            let state = |obj: &Bound<'_, PyAny>, name: &str| -> PyResult<Py<PyUntypedArray>> {
                let what = format!("state{label}['{name}']");
                let array = as_array(obj, || what.clone())?;
                check_state(&param, &array, &what)?;
                Ok(array.unbind())
            };
            slots.push(Slot {
                dtype,
                group: groups[i],
                exp_avg: state(&exp_avgs[i], "exp_avg")?,
                exp_avg_sq: state(&exp_avg_sqs[i], "exp_avg_sq")?,
                max_exp_avg_sq: match &max_exp_avg_sqs[i] {
                    Some(obj) => Some(state(obj, "max_exp_avg_sq")?),
                    None => None,
                },
                velocity: match &velocities[i] {
                    Some(obj) => Some(state(obj, "velocity")?),
                    None => None,
                },
                param: param.unbind(),
                label,
            });
        }
        Ok(CpuEngine { slots })
    }

    /// One step (number `step`, counting from 1) with per-group options and
    /// what each group carries from the previous step (NAdam's `mu_product`).
    /// Returns the carries for the next step, or None when `skip_nonfinite`
    /// found a NaN or Inf in a gradient (then nothing was written). Every check
    /// runs before any element is written; on error nothing changed.
    #[pyo3(signature = (grads, step, groups, carries, skip_nonfinite=false))]
    fn step(
        &self,
        py: Python<'_>,
        grads: Vec<Bound<'_, PyAny>>,
        step: u64,
        groups: Vec<GroupOptions>,
        carries: Vec<f64>,
        skip_nonfinite: bool,
    ) -> PyResult<Option<Vec<f64>>> {
        if grads.len() != self.slots.len() {
            return Err(PyValueError::new_err(format!(
                "expected {} grads (one per param), got {}",
                self.slots.len(),
                grads.len()
            )));
        }
        if carries.len() != groups.len() {
            return Err(PyValueError::new_err("carries must have one entry per group"));
        }
        let mut scalars = Vec::with_capacity(groups.len());
        let mut next_carries = Vec::with_capacity(groups.len());
        for (i, (options, mu_product)) in groups.into_iter().zip(carries).enumerate() {
            let (s, carry) = StepScalars::next(&config_of(options)?, step, Carry { mu_product })
                .map_err(|e| PyValueError::new_err(format!("param_groups[{i}]: {e}")))?;
            scalars.push(s);
            next_carries.push(carry.mu_product);
        }
        for slot in &self.slots {
            let fits = scalars.get(slot.group).is_some_and(|s| {
                (!s.amsgrad || slot.max_exp_avg_sq.is_some()) && (!s.velocity || slot.velocity.is_some())
            });
            if !fits {
                return Err(PyValueError::new_err(format!(
                    "params{}: its group's options do not match the optimizer's state",
                    slot.label
                )));
            }
        }
        let mut b32 = borrow_all::<f32>(py, &self.slots, &grads, DType::F32)?;
        let mut b64 = borrow_all::<f64>(py, &self.slots, &grads, DType::F64)?;
        let (t32, t64) = (views(&mut b32)?, views(&mut b64)?);
        py.detach(|| {
            if skip_nonfinite {
                let g32: Vec<&[f32]> = t32.iter().map(|t| t.grad).collect();
                let g64: Vec<&[f64]> = t64.iter().map(|t| t.grad).collect();
                if !(all_finite(&g32) && all_finite(&g64)) {
                    return Ok(None);
                }
            }
            step_tensors(t32, &scalars)?;
            step_tensors(t64, &scalars)?;
            Ok(Some(next_carries))
        })
        .map_err(|e: crate::StepError| PyRuntimeError::new_err(e.to_string()))
    }

    /// The number of tensors.
    fn __len__(&self) -> usize {
        self.slots.len()
    }
}

/// A bandwidth probe for the benchmarks: `p += g; m += g; v += g` over four
/// float32 arrays of one length, on rayon's threads in [`crate::CHUNK`] pieces.
/// It moves the bytes of an Adam step (4 reads, 3 writes per element) with
/// trivial arithmetic, so its speed is the machine's read-modify-write bandwidth.
#[pyfunction]
fn _rmw_probe(
    py: Python<'_>,
    p: Bound<'_, PyArrayDyn<f32>>,
    g: Bound<'_, PyArrayDyn<f32>>,
    m: Bound<'_, PyArrayDyn<f32>>,
    v: Bound<'_, PyArrayDyn<f32>>,
) -> PyResult<()> {
    use rayon::prelude::*;
    let err = |_| PyValueError::new_err("probe arrays must be distinct, writable and contiguous");
    let (mut p, g) = (
        p.try_readwrite().map_err(err)?,
        g.try_readonly().map_err(err)?,
    );
    let (mut m, mut v) = (
        m.try_readwrite().map_err(err)?,
        v.try_readwrite().map_err(err)?,
    );
    let contiguous = |_| PyValueError::new_err("probe arrays must be C-contiguous");
    let (p, g) = (
        p.as_slice_mut().map_err(contiguous)?,
        g.as_slice().map_err(contiguous)?,
    );
    let (m, v) = (
        m.as_slice_mut().map_err(contiguous)?,
        v.as_slice_mut().map_err(contiguous)?,
    );
    if g.len() != p.len() || m.len() != p.len() || v.len() != p.len() {
        return Err(PyValueError::new_err("probe arrays must have one length"));
    }
    let chunk = crate::CHUNK;
    py.detach(|| {
        p.par_chunks_mut(chunk)
            .zip(g.par_chunks(chunk))
            .zip(m.par_chunks_mut(chunk))
            .zip(v.par_chunks_mut(chunk))
            .for_each(|(((p, g), m), v)| {
                for i in 0..p.len() {
                    let (g, m, v) = (g[i], &mut m[i], &mut v[i]);
                    p[i] += g;
                    *m += g;
                    *v += g;
                }
            })
    });
    Ok(())
}

#[pymodule]
fn _core(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    // The GPU kernel's source, embedded so it ships inside the wheel.
    m.add("ADAM_WGSL", crate::ADAM_WGSL)?;
    m.add_function(wrap_pyfunction!(validate_options, m)?)?;
    m.add_function(wrap_pyfunction!(simd_level, m)?)?;
    m.add_function(wrap_pyfunction!(num_threads, m)?)?;
    m.add_function(wrap_pyfunction!(_rmw_probe, m)?)?;
    m.add_class::<CpuEngine>()?;
    Ok(())
}
