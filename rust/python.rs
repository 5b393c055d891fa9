//! The PyO3 bindings (`radam._core`). They only extract, check and dispatch:
//! every array is borrowed through rust-numpy's checked borrows (so aliasing
//! and read-only arrays are Python errors, never panics), every check runs
//! before any element is written, and the GIL is released while the kernel runs.

mod arrays;

use numpy::{
    PyArrayDyn, PyArrayMethods, PyReadonlyArrayDyn, PyUntypedArray, PyUntypedArrayMethods,
};
use pyo3::exceptions::{PyRuntimeError, PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::PyDict;
use std::sync::{Mutex, PoisonError};

use crate::finite::all_finite_stored;
use crate::{
    step_mixed, AdamConfig, Algorithm, BiasCorrection, Carry, Rule, SimdLevel, StepScalars,
};
use arrays::{as_array, borrow_grad, borrow_rw, Borrowed, DType, Rw};

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
        other => {
            return Err(PyValueError::new_err(format!(
                "unknown bias_correction {other:?}"
            )))
        }
    };
    let algorithm = match o.algorithm.as_str() {
        "adam" => Algorithm::Adam,
        "adamax" => Algorithm::Adamax,
        "nadam" => Algorithm::NAdam,
        "radam" => Algorithm::RAdam,
        other => {
            return Err(PyValueError::new_err(format!(
                "unknown algorithm {other:?}"
            )))
        }
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

/// The scalars of step `step` of one group (an `EngineOptions`) given its
/// carried `mu_product`, as `rust/scalars.rs` computes them in f64: a dict of
/// the `StepScalars` fields (`rule` as "adam", "adamax", "nadam" or
/// "unadapted"), and the `mu_product` to carry to the next step. The GPU
/// backend rounds them to f32 for its uniform, as the CPU kernel does.
#[pyfunction]
fn step_scalars<'py>(
    py: Python<'py>,
    options: GroupOptions,
    step: u64,
    mu_product: f64,
) -> PyResult<(Bound<'py, PyDict>, f64)> {
    let (s, carry) = StepScalars::next(&config_of(options)?, step, Carry { mu_product })
        .map_err(|e| PyValueError::new_err(e.to_string()))?;
    let rule = match s.rule {
        Rule::Adam => "adam",
        Rule::Adamax => "adamax",
        Rule::NAdam => "nadam",
        Rule::Unadapted => "unadapted",
    };
    let d = PyDict::new(py);
    for (name, value) in [
        ("step_size", s.step_size),
        ("inv_bias_correction2_sqrt", s.inv_bias_correction2_sqrt),
        ("one_minus_beta1", s.one_minus_beta1),
        ("beta2", s.beta2),
        ("one_minus_beta2", s.one_minus_beta2),
        ("eps", s.eps),
        ("l2", s.l2),
        ("decay", s.decay),
        ("momentum_keep", s.momentum_keep),
        ("momentum_step", s.momentum_step),
        ("max_gradient_elem", s.max_gradient_elem),
        ("max_gradient_norm", s.max_gradient_norm),
        ("grad_scale", s.grad_scale),
        ("nadam_grad", s.nadam_grad),
    ] {
        d.set_item(name, value)?;
    }
    d.set_item("maximize", s.maximize)?;
    d.set_item("amsgrad", s.amsgrad)?;
    d.set_item("velocity", s.velocity)?;
    d.set_item("rule", rule)?;
    Ok((d, carry.mu_product))
}

/// The L2 norm of a float32 gradient, summed in f64 in the CPU step's fixed
/// order (what norm clipping measures), for the GPU backend's host grads.
#[pyfunction]
fn grad_norm(py: Python<'_>, grad: PyReadonlyArrayDyn<'_, f32>) -> PyResult<f64> {
    let grad = grad
        .as_slice()
        .map_err(|_| PyValueError::new_err("grad_norm needs a C-contiguous array"))?;
    Ok(py.detach(|| crate::grad_norm(grad)))
}

/// The SIMD instruction set the kernels run with on this CPU.
#[pyfunction]
fn simd_level() -> &'static str {
    SimdLevel::detect().name()
}

/// The number of threads a step may use: the caller and its helpers (set `RAYON_NUM_THREADS` to change it).
#[pyfunction]
fn num_threads() -> usize {
    crate::num_threads()
}

/// One tensor the engine steps: its param and state arrays, checked at construction.
struct Slot {
    label: String,
    group: usize,
    param_dtype: DType,
    state_dtype: DType,
    param: Py<PyUntypedArray>,
    /// The float32 master copy of a 16-bit param, when kept.
    master: Option<Py<PyUntypedArray>>,
    exp_avg: Py<PyUntypedArray>,
    exp_avg_sq: Py<PyUntypedArray>,
    max_exp_avg_sq: Option<Py<PyUntypedArray>>,
    velocity: Option<Py<PyUntypedArray>>,
}

impl Slot {
    /// Borrow everything this tensor writes (params and state come first, so a
    /// grad that aliases any of them fails its own borrow afterwards).
    fn borrow_state<'py>(&self, py: Python<'py>) -> PyResult<Writes<'py>> {
        let label = &self.label;
        let rw = |array: &Py<PyUntypedArray>, dtype, name: &str| {
            borrow_rw(array.bind(py), dtype, &|| format!("state{label}['{name}']"))
        };
        let optional = |array: &Option<Py<PyUntypedArray>>, dtype, name: &str| {
            array.as_ref().map(|a| rw(a, dtype, name)).transpose()
        };
        Ok(Writes {
            param: borrow_rw(self.param.bind(py), self.param_dtype, &|| {
                format!("params{label}")
            })?,
            master: optional(&self.master, DType::F32, "master_param")?,
            exp_avg: rw(&self.exp_avg, self.state_dtype, "exp_avg")?,
            exp_avg_sq: rw(&self.exp_avg_sq, self.state_dtype, "exp_avg_sq")?,
            max_exp_avg_sq: optional(&self.max_exp_avg_sq, self.state_dtype, "max_exp_avg_sq")?,
            velocity: optional(&self.velocity, self.state_dtype, "velocity")?,
        })
    }
}

/// The write borrows of one tensor, taken before its grad's read borrow.
struct Writes<'py> {
    param: Rw<'py>,
    master: Option<Rw<'py>>,
    exp_avg: Rw<'py>,
    exp_avg_sq: Rw<'py>,
    max_exp_avg_sq: Option<Rw<'py>>,
    velocity: Option<Rw<'py>>,
}

/// A state array must have its param's shape, an allowed dtype, and be contiguous.
fn check_state(
    param: &Bound<'_, PyUntypedArray>,
    state: &Bound<'_, PyUntypedArray>,
    dtype: DType,
    what: &str,
) -> PyResult<()> {
    if DType::of(state)? != Some(dtype) || state.shape() != param.shape() {
        return Err(PyValueError::new_err(format!(
            "{what} must have its param's shape and the state dtype {dtype:?}"
        )));
    }
    if !state.is_c_contiguous() {
        return Err(PyValueError::new_err(format!(
            "{what} must be C-contiguous"
        )));
    }
    Ok(())
}

/// Steps a fixed list of tensors in place with the Rust kernel: params of
/// float32, float64, float16 or bfloat16, state of float32/float64 or 16 bits.
/// Built once by `radam.Adam`; `step` is the one native call of each step.
#[pyclass(module = "radam._core", frozen)]
struct CpuEngine {
    slots: Vec<Slot>,
    /// The groups' options as last extracted: the `EngineOptions` objects
    /// (held, so their addresses cannot be reused) and their configs. The
    /// optimizer passes the same immutable named tuples every step while no
    /// option changes, so reading 18 attributes per group is skipped then.
    configs: Mutex<(Vec<Py<PyAny>>, Vec<AdamConfig>)>,
}

impl CpuEngine {
    /// The config of every group, re-extracted only when a group's options
    /// object is not the one seen last step.
    fn configs(&self, groups: &[Bound<'_, PyAny>]) -> PyResult<Vec<AdamConfig>> {
        let mut cache = self.configs.lock().unwrap_or_else(PoisonError::into_inner);
        let same =
            cache.0.len() == groups.len() && cache.0.iter().zip(groups).all(|(a, b)| a.is(b));
        if !same {
            let configs = groups
                .iter()
                .map(|g| config_of(g.extract::<GroupOptions>()?))
                .collect::<PyResult<Vec<_>>>()?;
            *cache = (groups.iter().map(|g| g.clone().unbind()).collect(), configs);
        }
        Ok(cache.1.clone())
    }
}

#[pymethods]
impl CpuEngine {
    /// `labels[i]` is how messages name tensor i (e.g. "[0]" or "['w']");
    /// `groups[i]` is the index of its parameter group. `exp_avg_sqs` holds
    /// AdaMax's infinity norm for AdaMax groups. `masters[i]` is the float32
    /// master copy of a 16-bit param, or None.
    #[new]
    #[pyo3(signature = (labels, params, exp_avgs, exp_avg_sqs, max_exp_avg_sqs, velocities, groups, masters=None))]
    #[allow(clippy::too_many_arguments)]
    fn new(
        labels: Vec<String>,
        params: Vec<Bound<'_, PyAny>>,
        exp_avgs: Vec<Bound<'_, PyAny>>,
        exp_avg_sqs: Vec<Bound<'_, PyAny>>,
        max_exp_avg_sqs: Vec<Option<Bound<'_, PyAny>>>,
        velocities: Vec<Option<Bound<'_, PyAny>>>,
        groups: Vec<usize>,
        masters: Option<Vec<Option<Bound<'_, PyAny>>>>,
    ) -> PyResult<Self> {
        let n = params.len();
        let masters = masters.unwrap_or_else(|| vec![None; n]);
        if [
            labels.len(),
            exp_avgs.len(),
            exp_avg_sqs.len(),
            max_exp_avg_sqs.len(),
            velocities.len(),
            groups.len(),
            masters.len(),
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
            let exp_avg = as_array(&exp_avgs[i], || format!("state{label}['exp_avg']"))?;
            let state_dtype = DType::of(&exp_avg)?.unwrap_or(DType::F32);
            let allowed = if param_dtype.computes_in_f64() {
                state_dtype == DType::F64
            } else {
                state_dtype != DType::F64
            };
            if !allowed {
                return Err(PyTypeError::new_err(format!(
                    "state{label} has dtype {state_dtype:?}, which does not go with a \
                     {param_dtype:?} param"
                )));
            }
            let state =
                |obj: &Bound<'_, PyAny>, name: &str, dtype| -> PyResult<Py<PyUntypedArray>> {
                    let what = format!("state{label}['{name}']");
                    let array = as_array(obj, || what.clone())?;
                    check_state(&param, &array, dtype, &what)?;
                    Ok(array.unbind())
                };
            let optional = |obj: &Option<Bound<'_, PyAny>>, name: &str, dtype| {
                obj.as_ref().map(|o| state(o, name, dtype)).transpose()
            };
            let master = optional(&masters[i], "master_param", DType::F32)?;
            if master.is_some() && !matches!(param_dtype, DType::F16 | DType::Bf16) {
                return Err(PyValueError::new_err(format!(
                    "params{label}: a master copy is for float16 and bfloat16 params"
                )));
            }
            slots.push(Slot {
                group: groups[i],
                param_dtype,
                state_dtype,
                master,
                exp_avg: state(&exp_avgs[i], "exp_avg", state_dtype)?,
                exp_avg_sq: state(&exp_avg_sqs[i], "exp_avg_sq", state_dtype)?,
                max_exp_avg_sq: optional(&max_exp_avg_sqs[i], "max_exp_avg_sq", state_dtype)?,
                velocity: optional(&velocities[i], "velocity", state_dtype)?,
                param: param.unbind(),
                label,
            });
        }
        Ok(CpuEngine {
            slots,
            configs: Mutex::new((Vec::new(), Vec::new())),
        })
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
        groups: Vec<Bound<'_, PyAny>>,
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
            return Err(PyValueError::new_err(
                "carries must have one entry per group",
            ));
        }
        let mut scalars = Vec::with_capacity(groups.len());
        let mut next_carries = Vec::with_capacity(groups.len());
        for (i, (config, mu_product)) in self.configs(&groups)?.iter().zip(carries).enumerate() {
            let (s, carry) = StepScalars::next(config, step, Carry { mu_product })
                .map_err(|e| PyValueError::new_err(format!("param_groups[{i}]: {e}")))?;
            scalars.push(s);
            next_carries.push(carry.mu_product);
        }
        for slot in &self.slots {
            let fits = scalars.get(slot.group).is_some_and(|s| {
                (!s.amsgrad || slot.max_exp_avg_sq.is_some())
                    && (!s.velocity || slot.velocity.is_some())
            });
            if !fits {
                return Err(PyValueError::new_err(format!(
                    "params{}: its group's options do not match the optimizer's state",
                    slot.label
                )));
            }
        }
        // Every write borrow first, then the grads: a grad that aliases a
        // param or state array fails its borrow.
        let mut writes = Vec::with_capacity(self.slots.len());
        for slot in &self.slots {
            writes.push(slot.borrow_state(py)?);
        }
        let mut borrowed = Vec::with_capacity(self.slots.len());
        for ((slot, grad), w) in self.slots.iter().zip(&grads).zip(writes) {
            let what = || format!("grads{}", slot.label);
            let shape = slot.param.bind(py).shape();
            let grad = borrow_grad(grad, slot.param_dtype, shape, &what)?;
            borrowed.push(Borrowed {
                param: w.param,
                master: w.master,
                grad,
                exp_avg: w.exp_avg,
                exp_avg_sq: w.exp_avg_sq,
                max_exp_avg_sq: w.max_exp_avg_sq,
                velocity: w.velocity,
                group: slot.group,
            });
        }
        let (mut b64, mut b32): (Vec<_>, Vec<_>) = borrowed
            .into_iter()
            .zip(&self.slots)
            .partition(|(_, slot)| slot.param_dtype.computes_in_f64());
        let t32 = b32
            .iter_mut()
            .map(|(b, _)| b.tensor::<f32>())
            .collect::<PyResult<Vec<_>>>()?;
        let t64 = b64
            .iter_mut()
            .map(|(b, _)| b.tensor::<f64>())
            .collect::<PyResult<Vec<_>>>()?;
        py.detach(|| {
            if skip_nonfinite {
                let g32: Vec<_> = t32.iter().map(|t| t.grad).collect();
                let g64: Vec<_> = t64.iter().map(|t| t.grad).collect();
                if !(all_finite_stored(&g32) && all_finite_stored(&g64)) {
                    return Ok(None);
                }
            }
            step_mixed(t32, &scalars)?;
            step_mixed(t64, &scalars)?;
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
/// float32 arrays of one length, in [`crate::CHUNK`] pieces spread over a step's threads.
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
    // Chunks spread over the threads exactly as a step's units are, after a
    // head up to p's first cache-line boundary, as the kernel aligns them.
    let head = crate::storage::to_line_boundary(p);
    let ((p0, p), (g0, g)) = (p.split_at_mut(head), g.split_at(head));
    let ((m0, m), (v0, v)) = (m.split_at_mut(head), v.split_at_mut(head));
    let chunks: Vec<_> = std::iter::once((((p0, g0), m0), v0))
        .chain(
            p.chunks_mut(chunk)
                .zip(g.chunks(chunk))
                .zip(m.chunks_mut(chunk))
                .zip(v.chunks_mut(chunk)),
        )
        .collect();
    py.detach(|| {
        crate::team::Team::current().for_each_owned(chunks, |(((p, g), m), v)| {
            // Re-sliced to one length so the loop has no bounds checks.
            let n = p.len();
            let (g, m, v) = (&g[..n], &mut m[..n], &mut v[..n]);
            for i in 0..n {
                let (g, m, v) = (g[i], &mut m[i], &mut v[i]);
                p[i] += g;
                *m += g;
                *v += g;
            }
        })
    });
    Ok(())
}

/// A copy bandwidth probe for the benchmarks: `dst[:] = src` over two float32
/// arrays of one length, in [`crate::CHUNK`] pieces spread over a step's threads (one
/// read and one write per element).
#[pyfunction]
fn _copy_probe(
    py: Python<'_>,
    dst: Bound<'_, PyArrayDyn<f32>>,
    src: Bound<'_, PyArrayDyn<f32>>,
) -> PyResult<()> {
    let err = |_| PyValueError::new_err("probe arrays must be distinct, writable and contiguous");
    let (mut dst, src) = (
        dst.try_readwrite().map_err(err)?,
        src.try_readonly().map_err(err)?,
    );
    let contiguous = |_| PyValueError::new_err("probe arrays must be C-contiguous");
    let (dst, src) = (
        dst.as_slice_mut().map_err(contiguous)?,
        src.as_slice().map_err(contiguous)?,
    );
    if dst.len() != src.len() {
        return Err(PyValueError::new_err("probe arrays must have one length"));
    }
    let chunk = crate::CHUNK;
    let chunks: Vec<_> = dst.chunks_mut(chunk).zip(src.chunks(chunk)).collect();
    py.detach(|| {
        crate::team::Team::current().for_each_owned(chunks, |(d, s)| d.copy_from_slice(s))
    });
    Ok(())
}

#[pymodule]
fn _core(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    // The GPU kernel's source, embedded so it ships inside the wheel.
    m.add("ADAM_WGSL", crate::ADAM_WGSL)?;
    m.add_function(wrap_pyfunction!(validate_options, m)?)?;
    m.add_function(wrap_pyfunction!(step_scalars, m)?)?;
    m.add_function(wrap_pyfunction!(grad_norm, m)?)?;
    m.add_function(wrap_pyfunction!(simd_level, m)?)?;
    m.add_function(wrap_pyfunction!(num_threads, m)?)?;
    m.add_function(wrap_pyfunction!(_rmw_probe, m)?)?;
    m.add_function(wrap_pyfunction!(_copy_probe, m)?)?;
    m.add_class::<CpuEngine>()?;
    crate::python_quant::register(m)?;
    Ok(())
}
