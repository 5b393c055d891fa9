//! Plumbing: what radam's own Python bindings take from the core that is not the
//! crate's API. Hidden from the docs and free to change in any release; Rust
//! programs use the items the crate root exports.

pub use crate::config::{Choice, Fields};
pub use crate::multi::{CHUNK, SERIAL_MAX};
pub use crate::scalars::{CountedSteps, StepCounts};
pub use crate::uniform::{GpuStep, Pipeline, ADAM_WGSL, PROBES_WGSL, STEP_FIELDS, STEP_WORDS};
