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
//! Python in its dependency tree. The `candle` feature adds `radam::candle::Adam`,
//! a `candle_nn::Optimizer` that steps candle `Var`s in place.

#![warn(missing_docs)]

// The modules form a one-way stack: each imports only modules declared above it
// (rust/layers_tests.rs checks it from the sources), and the bindings sit on top.
// One module to a comment, so that rustfmt keeps this order.

// Numbers: the errors, the element types, their 16-bit storage and conversions.
mod error;
// The float types the kernels compute in.
mod element;
// The arithmetic the element update is written in (plain floats; SIMD lanes in `quant`).
mod arith;
// 16-bit values converted inside the kernel loop.
mod convert;
// How a buffer is stored (holders), and runs of it widened and narrowed.
mod storage;
// The options of a group.
mod config;
// The one per-tensor buffer record.
mod tensor;
// The element loop, its coefficients and flags.
mod kernel;
// The per-step scalars, computed on the host, and the coefficients made from them.
mod scalars;
// Run-time SIMD dispatch of the element loop.
mod simd;
// 8-bit state codecs and stochastic rounding, per SIMD level.
pub mod quant;
// The GPU kernel's per-step rows and pipeline constants, from those coefficients
// (and stochastic rounding's keys).
mod uniform;
// Pieces run through stack blocks (16-bit params, master copies).
mod staged;
// The threads of a step.
mod team;
// The multi-tensor planner.
mod multi;
// Row-sparse (lazy) steps of tables, through the planner.
mod rows;
// The non-finite guard over the gradients.
mod finite;
// The owning optimizer.
mod optimizer;
// A candle optimizer over `Var`s (the `candle` feature).
#[cfg(feature = "candle")]
pub mod candle;
// What radam's own bindings use from the core that is not the crate's API.
#[doc(hidden)]
pub mod plumbing;

#[cfg(all(test, feature = "candle"))]
mod candle_tests;
#[cfg(test)]
mod kernel_tests;
#[cfg(test)]
mod layers_tests;
#[cfg(test)]
mod q8_tests;
#[cfg(test)]
mod stack_tests;
#[cfg(test)]
mod storage_tests;

#[cfg(feature = "python")]
mod python;

// The README's Rust example is compiled (and run) by `cargo test` as a doctest,
// so it cannot stop compiling unnoticed.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;

pub use config::{AdamConfig, Algorithm, BiasCorrection};
pub use convert::Store;
pub use element::Float;
#[cfg(feature = "candle")]
pub use error::VarError;
pub use error::{ConfigError, StepError};
pub use finite::{all_finite, all_finite_stored};
pub use multi::{check_mixed, grad_norm, step_tensors, step_tensors_with, Checked, CheckedTensors};
pub use optimizer::{Adam, AdamState};
pub use rows::{check_rows, step_rows, step_rows_with, CheckedRows, RowGrad, RowTensorMut};
pub use scalars::{Carry, Count, Rule, StepScalars, TensorSteps};
pub use simd::SimdLevel;
pub use storage::{Split, Stored, StoredMut, Q8_BLOCK};
pub use tensor::{Buffer, MixedTensorMut, Origin, State, Tensor, TensorMut};

/// The number of threads a multi-tensor step may use from the calling
/// thread: the current rayon pool's on one of its workers; otherwise the
/// caller plus `n - 1` helpers, `n` being rayon's global thread count
/// (`RAYON_NUM_THREADS` or [`rayon::ThreadPoolBuilder::build_global`]).
pub use team::num_threads;
