//! The PyO3 bindings (`radam._core`). They only extract, check and dispatch:
//! every array is borrowed through rust-numpy's checked borrows and every
//! grad's bytes are compared with the bytes the step writes (so aliasing and
//! read-only arrays are Python errors, never panics), every check of every
//! tensor runs before any element is written, and the GIL is released while
//! the kernel runs.
//!
//! * `config.rs`: `AdamConfig`, the core's options taken once from a group's
//!   validated `EngineOptions`;
//! * `engine.rs`: `CpuEngine`, which steps NumPy arrays in place;
//! * `gpu.rs`: `GpuStep`, the rows and pipeline constants of a GPU step;
//! * `arrays.rs` and `extents.rs`: dtypes, borrows and byte ranges;
//! * `quant.rs`: the 8-bit codec's bindings (`Q8_BLOCK`, `_q8_map`, `_q8_encode`, `_q8_decode`);
//! * `probes.rs` (only with the `bench` feature): the benchmarks' bandwidth probes.

mod arrays;
mod config;
mod engine;
mod extents;
mod gpu;
#[cfg(feature = "bench")]
mod probes;
mod quant;
mod rows;

use pyo3::prelude::*;
use pyo3::types::PyTuple;

use crate::plumbing::{Choice, ADAM_WGSL, PROBES_WGSL, STEP_FIELDS};
use crate::{AdamConfig, Algorithm, BiasCorrection, SimdLevel};

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

#[pymodule]
fn _core(m: &Bound<'_, PyModule>) -> PyResult<()> {
    let py = m.py();
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    // The GPU kernel's source, embedded so it ships inside the wheel.
    m.add("ADAM_WGSL", ADAM_WGSL)?;
    m.add("PROBES_WGSL", PROBES_WGSL)?;
    // The names the options' choices take, for the Python option table.
    let algorithms = Algorithm::ALL.iter().map(|a| a.name());
    m.add("ALGORITHMS", PyTuple::new(py, algorithms)?)?;
    let corrections = BiasCorrection::ALL.iter().map(|b| b.name());
    m.add("BIAS_CORRECTIONS", PyTuple::new(py, corrections)?)?;
    // The fields an AdamConfig is read from, by name (EngineOptions' fields).
    m.add("CONFIG_FIELDS", PyTuple::new(py, AdamConfig::FIELDS)?)?;
    // The fields of the GPU kernel's `Step` uniform, in order.
    m.add("STEP_FIELDS", PyTuple::new(py, STEP_FIELDS)?)?;
    m.add_function(wrap_pyfunction!(simd_level, m)?)?;
    m.add_function(wrap_pyfunction!(num_threads, m)?)?;
    m.add_class::<config::PyAdamConfig>()?;
    m.add_class::<engine::CpuEngine>()?;
    m.add_class::<gpu::PyGpuStep>()?;
    #[cfg(feature = "bench")]
    probes::register(m)?;
    quant::register(m)?;
    Ok(())
}
