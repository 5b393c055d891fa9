//! radam: Adam done well.
//!
//! A fused, single-pass Adam kernel over slices of `f32` or `f64`, with the
//! SIMD level (AVX-512, AVX2+FMA, NEON, scalar) chosen at run time and the
//! work of many tensors spread over rayon's threads. The results are the same
//! bit for bit at every SIMD level and thread count.
//!
//! * [`Adam`] owns the moments: the simplest way to use the crate.
//! * [`step_tensors`] steps caller-owned buffers (what the Python bindings use).
//! * [`StepScalars`] are the per-step scalars (bias corrections), computed on
//!   the host in f64 once per step.
//!
//! The `python` feature adds the PyO3 bindings; by default the crate has no
//! Python in its dependency tree.

mod config;
mod convert;
mod element;
mod error;
mod finite;
mod kernel;
mod multi;
mod optimizer;
pub mod quant;
mod scalars;
mod simd;
mod storage;
mod team;

#[cfg(test)]
mod kernel_tests;
#[cfg(test)]
mod storage_tests;

#[cfg(feature = "python")]
mod python;
#[cfg(feature = "python")]
#[path = "python/quant.rs"]
mod python_quant;

pub use config::{AdamConfig, Algorithm, BiasCorrection};
pub use convert::Store;
pub use element::Float;
pub use error::{ConfigError, StepError};
pub use finite::{all_finite, all_finite_stored};
pub use multi::{
    grad_norm, step_mixed, step_mixed_with, step_tensors, step_tensors_with, MixedTensorMut,
    TensorMut, CHUNK, SERIAL_MAX,
};
pub use optimizer::{Adam, AdamState};
pub use scalars::{Carry, Rule, StepScalars};
pub use simd::SimdLevel;
pub use storage::{Stored, StoredMut};

/// The WGSL source of the GPU kernel (`shaders/adam.wgsl`), for running the
/// same Adam step through WebGPU (`wgpu`). Its entry point is `adam_step`.
pub const ADAM_WGSL: &str = include_str!("../shaders/adam.wgsl");

/// The number of threads a multi-tensor step may use from the calling
/// thread: the current rayon pool's on one of its workers; otherwise the
/// caller plus `n - 1` helpers, `n` being rayon's global thread count
/// (`RAYON_NUM_THREADS` or [`rayon::ThreadPoolBuilder::build_global`]).
pub use team::num_threads;
