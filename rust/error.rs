//! Errors of the core. Nothing in the core panics on bad input: it returns one of these.

use thiserror::Error;

/// A hyperparameter outside its range. `name` is the argument as the Python API spells it.
#[derive(Debug, Clone, Copy, PartialEq, Error)]
#[error("invalid {name}: {value} (must be {rule})")]
pub struct ConfigError {
    pub name: &'static str,
    pub value: f64,
    pub rule: &'static str,
}

/// Buffers that do not fit together. Checked before any element is written.
#[derive(Debug, Clone, PartialEq, Error)]
pub enum StepError {
    #[error("tensor {index}: {buffer} has {got} elements but the param has {expected}")]
    LengthMismatch {
        index: usize,
        buffer: &'static str,
        expected: usize,
        got: usize,
    },
    #[error("expected {expected} {what}, got {got}")]
    CountMismatch {
        what: &'static str,
        expected: usize,
        got: usize,
    },
    #[error("tensor {index}: group {group} does not exist ({groups} groups)")]
    GroupOutOfRange {
        index: usize,
        group: usize,
        groups: usize,
    },
    #[error("tensor {index}: its group's options need a {buffer} buffer")]
    MissingBuffer { index: usize, buffer: &'static str },
    #[error("this CPU does not support the {0} kernels")]
    UnsupportedSimd(&'static str),
    #[error("the step counter must start at 1, got 0")]
    StepZero,
    #[error("the step counter would overflow u64")]
    StepOverflow,
    #[error(transparent)]
    Config(#[from] ConfigError),
}
