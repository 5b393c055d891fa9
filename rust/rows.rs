//! Row-sparse (lazy) steps: a table, a tensor of rows of `row_len` elements
//! each, stepped only at the rows its gradient names. Every other row, and its
//! state, is left as it is (torch's `SparseAdam`, TensorFlow's `LazyAdam`).
//!
//! The indices are coalesced by sorting them (never the table): each named row
//! is stepped once, with the sum of its values. The rows are then pieces of
//! the multi-tensor step (`multi.rs`) cut from the table's buffers, so no two
//! threads hold one row, and every storage the dense step has (16-bit params
//! and state, master copies, 8-bit state, stochastic rounding) steps a row as
//! it steps the same elements of a dense tensor.

use crate::element::Float;
use crate::error::StepError;
use crate::multi::{check_tensor, origin_of, run_pieces, stored_sum_squares, PerTensor, Piece};
use crate::scalars::StepScalars;
use crate::simd::SimdLevel;
use crate::storage::{Kind, Split, Stored, StoredMut, Q8_BLOCK};
use crate::tensor::Tensor;

/// Where the gradient of a named row is.
#[derive(Clone, Copy, Debug)]
enum Source {
    /// Row `k` of the values (the row was named once).
    At(usize),
    /// Row `k` of the sums (the row was named more than once).
    Summed(usize),
}

/// A row-sparse gradient, coalesced: the rows it names, each once and in
/// ascending order, with the sum of the values given for each.
pub struct RowGrad<'a, T> {
    rows: Vec<usize>,
    sources: Vec<Source>,
    values: Stored<'a, T>,
    /// The rows named more than once, their values summed in the compute
    /// type, in the order given.
    summed: Vec<T>,
    row_len: usize,
    table_rows: usize,
}

/// `(row, position)` for each index, sorted: rows ascending, and a repeated
/// row's positions in the order given.
fn ascending(indices: &[i64]) -> Vec<(usize, usize)> {
    // Two u32 halves packed in a u64 sort about twice as fast as pairs.
    let narrow = indices.len() <= 1 << 32 && indices.iter().all(|&r| r < 1 << 32);
    if narrow {
        let mut keys: Vec<u64> = (indices.iter().enumerate())
            .map(|(p, &r)| ((r as u64) << 32) | p as u64)
            .collect();
        keys.sort_unstable();
        let low = u64::from(u32::MAX);
        keys.into_iter()
            .map(|k| ((k >> 32) as usize, (k & low) as usize))
            .collect()
    } else {
        let mut pairs: Vec<(usize, usize)> = (indices.iter().enumerate())
            .map(|(p, &r)| (r as usize, p))
            .collect();
        pairs.sort_unstable();
        pairs
    }
}

/// Row `k` of `values`, rows of `row_len` elements.
fn row_of<T>(values: Stored<'_, T>, k: usize, row_len: usize) -> Stored<'_, T> {
    let (_, rest) = values.split_at(k * row_len);
    rest.split_at(row_len).0
}

/// Add `row` to `acc` (or, when `first`, copy it there: 0 + x is not x for
/// x = -0), element by element, in the compute type.
fn add_row<T: Float>(acc: &mut [T], row: Stored<'_, T>, first: bool) {
    fn add<X: Copy, T: Float>(acc: &mut [T], row: &[X], first: bool, load: impl Fn(X) -> T) {
        let pairs = acc.iter_mut().zip(row);
        if first {
            pairs.for_each(|(a, &x)| *a = load(x));
        } else {
            pairs.for_each(|(a, &x)| *a = *a + load(x));
        }
    }
    match row {
        Stored::Native(r) => add(acc, r, first, |x| x),
        // Exact: every 16-bit value is a float32 (and a float64).
        Stored::Bf16(r) => add(acc, r, first, |x| T::from_f64(x.to_f64())),
        Stored::F16(r) => add(acc, r, first, |x| T::from_f64(x.to_f64())),
    }
}

impl<'a, T: Float> RowGrad<'a, T> {
    /// The gradient of a table of `table_rows` rows of `row_len` elements that
    /// is `values` (`indices.len()` rows of `row_len`) at rows `indices`,
    /// which may repeat: a repeated row's values are summed, in the order given.
    pub fn new(
        indices: &[i64],
        values: Stored<'a, T>,
        row_len: usize,
        table_rows: usize,
    ) -> Result<Self, StepError> {
        let expected = indices.len() * row_len;
        if values.len() != expected {
            return Err(StepError::RowValues {
                expected,
                got: values.len(),
            });
        }
        if let Some(position) =
            (indices.iter()).position(|&r| r < 0 || r as u64 >= table_rows as u64)
        {
            return Err(StepError::RowOutOfRange {
                position,
                row: indices[position],
                rows: table_rows,
            });
        }
        let order = ascending(indices);
        let mut grad = RowGrad {
            rows: Vec::with_capacity(order.len()),
            sources: Vec::with_capacity(order.len()),
            values,
            summed: Vec::new(),
            row_len,
            table_rows,
        };
        let mut i = 0;
        while i < order.len() {
            let (row, first) = order[i];
            let run = order[i..].iter().take_while(|(r, _)| *r == row).count();
            grad.rows.push(row);
            if run == 1 {
                grad.sources.push(Source::At(first));
            } else {
                let start = grad.summed.len();
                grad.sources.push(Source::Summed(start / row_len.max(1)));
                grad.summed.resize(start + row_len, T::ZERO);
                let acc = &mut grad.summed[start..];
                for (n, &(_, p)) in order[i..i + run].iter().enumerate() {
                    add_row(acc, row_of(values, p, row_len), n == 0);
                }
            }
            i += run;
        }
        Ok(grad)
    }

    /// The rows named, each once, ascending.
    pub fn rows(&self) -> &[usize] {
        &self.rows
    }

    /// The gradient of the `k`-th row of [`RowGrad::rows`].
    pub fn row(&self, k: usize) -> Stored<'_, T> {
        match self.sources[k] {
            Source::At(p) => row_of(self.values, p, self.row_len),
            Source::Summed(s) => row_of(Stored::Native(&self.summed), s, self.row_len),
        }
    }

    /// The elements in a row.
    pub fn row_len(&self) -> usize {
        self.row_len
    }

    /// The rows of the table.
    pub fn table_rows(&self) -> usize {
        self.table_rows
    }

    /// Every value given and every sum: what a check for NaN and Inf reads.
    pub fn parts(&self) -> [Stored<'_, T>; 2] {
        [self.values, Stored::Native(&self.summed)]
    }

    /// The L2 norm of the coalesced gradient: each row's sum of squares, added
    /// in the order of the rows.
    pub fn norm(&self) -> f64 {
        let rows = 0..self.rows.len();
        rows.map(|k| stored_sum_squares(self.row(k)))
            .sum::<f64>()
            .sqrt()
    }
}

/// The buffers of a table stepped at the rows of a [`RowGrad`].
pub type RowTensorMut<'a, T> = Tensor<StoredMut<'a, T>, &'a RowGrad<'a, T>>;

/// Tables that [`check_rows`] found to fit their gradients and groups.
pub struct CheckedRows<'a, 'g, T> {
    tensors: Vec<RowTensorMut<'a, T>>,
    groups: &'g [StepScalars],
}

/// Check that every table fits its row-sparse gradient and its group (as
/// [`crate::check_mixed`] checks a dense tensor), writing nothing.
pub fn check_rows<'a, 'g, T: Float>(
    tensors: Vec<RowTensorMut<'a, T>>,
    groups: &'g [StepScalars],
) -> Result<CheckedRows<'a, 'g, T>, StepError> {
    for (index, t) in tensors.iter().enumerate() {
        let len = t.param.len();
        check_tensor(index, t, len, groups)?;
        let (rows, row_len) = (t.grad.table_rows, t.grad.row_len);
        if rows * row_len != len {
            return Err(StepError::RowTable {
                index,
                rows,
                row_len,
                len,
            });
        }
        // A block of 8-bit state must lie in one row: its absmax is shared.
        let q8 = t.state.buffers().any(|(_, s)| s.kind() == Kind::Q8);
        if q8 && row_len % Q8_BLOCK != 0 {
            return Err(StepError::Q8RowLength { index, row_len });
        }
    }
    Ok(CheckedRows { tensors, groups })
}

impl<'a, T: Float> CheckedRows<'a, '_, T> {
    /// The gradients, to read before the tables are stepped.
    pub fn grads(&self) -> impl Iterator<Item = &'a RowGrad<'a, T>> + '_ {
        self.tensors.iter().map(|t| t.grad)
    }

    /// Step the named rows at the detected SIMD level.
    pub fn step(self) {
        run_rows(SimdLevel::detect(), self);
    }
}

impl Split for () {
    fn split_at(self, _: usize) -> ((), ()) {
        ((), ())
    }
}

/// One step of the rows named by each table's gradient. `groups[i]` holds the
/// scalars of group `i`, whose step count is the table's.
pub fn step_rows<'a, T: Float>(
    tensors: Vec<RowTensorMut<'a, T>>,
    groups: &[StepScalars],
) -> Result<(), StepError> {
    step_rows_with(SimdLevel::detect(), tensors, groups)
}

/// [`step_rows`] at a chosen SIMD level (an error if this CPU lacks it).
pub fn step_rows_with<'a, T: Float>(
    level: SimdLevel,
    tensors: Vec<RowTensorMut<'a, T>>,
    groups: &[StepScalars],
) -> Result<(), StepError> {
    if !level.is_supported() {
        return Err(StepError::UnsupportedSimd(level.name()));
    }
    run_rows(level, check_rows(tensors, groups)?);
    Ok(())
}

fn run_rows<T: Float>(level: SimdLevel, checked: CheckedRows<'_, '_, T>) {
    let CheckedRows { tensors, groups } = checked;
    let per = PerTensor::new(
        groups,
        (tensors.iter().enumerate()).map(|(i, t)| (t.group, origin_of(i, t.origin).tensor)),
        |i| tensors[i].grad.norm(),
    );
    let total = (tensors.iter())
        .map(|t| t.grad.rows.len() * t.grad.row_len)
        .sum();
    let pieces = tensors.into_iter().enumerate().flat_map(|(index, t)| {
        let origin = origin_of(index, t.origin);
        let grad = t.grad;
        let row_len = grad.row_len;
        // The table's buffers after the last row cut, and that row's end.
        let mut rest = Some(t.with_grad(()));
        let (mut k, mut end) = (0, 0);
        std::iter::from_fn(move || {
            let start = grad.rows.get(k)? * row_len;
            let (_, tail) = rest.take()?.split_at(start - end);
            let (row, tail) = tail.split_at(row_len);
            let piece = Piece {
                buffers: row.with_grad(grad.row(k)),
                tensor: index,
                origin: origin.advanced(start),
            };
            (rest, k, end) = (Some(tail), k + 1, start + row_len);
            Some(piece)
        })
    });
    run_pieces(level, &per, pieces, total);
}
