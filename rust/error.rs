//! Errors of the core. Nothing in the core panics on bad input: it returns one of these.

use thiserror::Error;

/// A hyperparameter outside its range. `name` is the argument as the Python API spells it.
#[derive(Debug, Clone, Copy, PartialEq, Error)]
#[error("invalid {name}: {value} (must be {rule})")]
pub struct ConfigError {
    /// The option, as the Python API names it (`"lr"`, `"betas[0]"`, ...).
    pub name: &'static str,
    /// The value that was refused.
    pub value: f64,
    /// What the value must be, in words (`"finite and >= 0"`, ...).
    pub rule: &'static str,
}

/// Buffers that do not fit together. Checked before any element is written.
#[derive(Debug, Clone, PartialEq, Error)]
pub enum StepError {
    /// A buffer of one tensor is not as long as its param.
    #[error("tensor {index}: {buffer} has {got} elements but the param has {expected}")]
    LengthMismatch {
        /// The tensor's position in the call.
        index: usize,
        /// Which buffer (`"grad"`, `"exp_avg"`, ...).
        buffer: &'static str,
        /// The param's length.
        expected: usize,
        /// The buffer's length.
        got: usize,
    },
    /// A list (of grads, of tensors, ...) has the wrong number of entries.
    #[error("expected {expected} {what}, got {got}")]
    CountMismatch {
        /// What was counted.
        what: &'static str,
        /// How many there should be.
        expected: usize,
        /// How many there are.
        got: usize,
    },
    /// A tensor names a parameter group that was not passed.
    #[error("tensor {index}: group {group} does not exist ({groups} groups)")]
    GroupOutOfRange {
        /// The tensor's position in the call.
        index: usize,
        /// The group it names.
        group: usize,
        /// How many groups were passed.
        groups: usize,
    },
    /// A group's options need a state buffer (AMSGrad's max, the velocity) the tensor lacks.
    #[error("tensor {index}: its group's options need a {buffer} buffer")]
    MissingBuffer {
        /// The tensor's position in the call.
        index: usize,
        /// The missing buffer.
        buffer: &'static str,
    },
    /// A master copy that is not stored as the compute type.
    #[error("tensor {index}: a master copy must be stored as the compute type")]
    MasterNotNative {
        /// The tensor's position in the call.
        index: usize,
    },
    /// Stochastic rounding asked of a tensor that is not a 16-bit param
    /// computed in float32 without a master copy.
    #[error(
        "tensor {index}: stochastic_rounding is for bfloat16 and float16 params (computed \
         in float32) without a master copy"
    )]
    RoundingNot16Bit {
        /// The tensor's position in the call.
        index: usize,
    },
    /// A SIMD level was forced that this CPU cannot run.
    #[error("this CPU does not support the {0} kernels")]
    UnsupportedSimd(&'static str),
    /// Step counts start at 1 (the bias corrections divide by `1 - beta^t`).
    #[error("the step counter must start at 1, got 0")]
    StepZero,
    /// One more step would not fit the `u64` counter.
    #[error("the step counter would overflow u64")]
    StepOverflow,
    /// A row-sparse gradient's values are not one row of the table per index.
    #[error("the values hold {got} elements, but the indices name rows of {expected} in all")]
    RowValues {
        /// The number of indices times the row length.
        expected: usize,
        /// The values' length.
        got: usize,
    },
    /// A row-sparse gradient names a row the table lacks.
    #[error("indices[{position}] is {row}, outside the table's {rows} rows")]
    RowOutOfRange {
        /// Where in the indices.
        position: usize,
        /// The row it names.
        row: i64,
        /// The table's rows.
        rows: usize,
    },
    /// A row-sparse gradient's table is not the param.
    #[error("tensor {index}: {rows} rows of {row_len} elements are not its param's {len}")]
    RowTable {
        /// The tensor's position in the call.
        index: usize,
        /// The gradient's table rows.
        rows: usize,
        /// Its row length.
        row_len: usize,
        /// The param's length.
        len: usize,
    },
    /// 8-bit state of a table whose rows are not whole blocks (a block's absmax
    /// would be shared by two rows).
    #[error(
        "tensor {index}: 8-bit state steps rows of a whole number of 256-element blocks, \
         and a row has {row_len} elements"
    )]
    Q8RowLength {
        /// The tensor's position in the call.
        index: usize,
        /// The row length.
        row_len: usize,
    },
    /// An option out of its range.
    #[error(transparent)]
    Config(#[from] ConfigError),
}

/// A candle `Var`, its gradient or a state file that [`crate::candle::Adam`]
/// refuses. Checked before anything is written: on this error the vars, the
/// state and the step counts are as they were.
#[cfg(feature = "candle")]
#[derive(Debug, Clone, PartialEq, Error)]
pub enum VarError {
    /// The var is not on the CPU.
    #[error("var {index} is on {device}: radam steps CPU tensors only")]
    Device {
        /// The var's position in the optimizer.
        index: usize,
        /// Its device (`"cuda"`, `"metal"`).
        device: String,
    },
    /// The var's dtype is not one radam steps.
    #[error("var {index} has dtype {dtype}: radam steps f32, f64, bf16 and f16")]
    Dtype {
        /// The var's position in the optimizer.
        index: usize,
        /// Its dtype.
        dtype: String,
    },
    /// The var's elements are not one contiguous run of its storage.
    #[error("var {index} is not contiguous (strides {strides:?} for shape {shape:?}): radam steps storage in place")]
    NotContiguous {
        /// The var's position in the optimizer.
        index: usize,
        /// Its shape.
        shape: Vec<usize>,
        /// Its strides.
        strides: Vec<usize>,
    },
    /// Two vars share their storage (the same var passed twice, say).
    #[error("var {index} shares its storage with var {other}")]
    SharedStorage {
        /// The later var's position.
        index: usize,
        /// The earlier one's.
        other: usize,
    },
    /// The gradient does not fit its var (dtype, shape or device), or is the storage of a var.
    #[error("the gradient of var {index} {reason}")]
    Grad {
        /// The var's position in the optimizer.
        index: usize,
        /// What is wrong, in words.
        reason: String,
    },
    /// A state file that does not fit this optimizer, or cannot be read or written.
    #[error("state file {path}: {reason}")]
    StateFile {
        /// The file.
        path: String,
        /// What is wrong, in words.
        reason: String,
    },
}
