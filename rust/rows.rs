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
use half::{bf16, f16};

use crate::kernel::{Coeffs, Slices};
use crate::multi::{
    check_tensor, origin_of, run_pieces, stored_sum_squares, unit_len, Checked, PerTensor, Piece,
    SERIAL_MAX,
};
use crate::scalars::StepScalars;
use crate::simd::{fused_16bit_kernel, kernel_for, KernelFn, SimdLevel};
use crate::storage::{prefetch, Kind, Split, Stored, StoredMut, Q8_BLOCK};
use crate::team::Team;
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
pub type CheckedRows<'a, 'g, T> = Checked<'g, RowTensorMut<'a, T>>;

/// Check that every table fits its row-sparse gradient and its group (as
/// [`crate::check_mixed`] checks a dense tensor), writing nothing.
pub fn check_rows<'a, 'g, T: Float>(
    tensors: Vec<RowTensorMut<'a, T>>,
    groups: &'g [StepScalars],
) -> Result<CheckedRows<'a, 'g, T>, StepError> {
    Checked::each(tensors, groups, |index, t| {
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
        Ok(())
    })
}

impl<'a, T: Float> Checked<'_, RowTensorMut<'a, T>> {
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
    let Checked { tensors, groups } = checked;
    let per = PerTensor::new(
        groups,
        (tensors.iter().enumerate()).map(|(i, t)| (t.group, origin_of(i, t.origin).tensor)),
        |i| tensors[i].grad.norm(),
    );
    let mut staged = Vec::new();
    for (index, t) in tensors.into_iter().enumerate() {
        let grad = t.grad;
        let table = Piece {
            origin: origin_of(index, t.origin),
            buffers: t.with_grad(Stored::Native(&[])),
            tensor: index,
        };
        if let Some(table) = run_fused(level, &per, table, grad) {
            staged.push((table, grad));
        }
    }
    let total = (staged.iter()).map(|(_, g)| g.rows.len() * g.row_len).sum();
    let pieces = staged.into_iter().flat_map(|(table, grad)| {
        let (tensor, origin, row_len) = (table.tensor, table.origin, grad.row_len);
        // The table's buffers after the last row cut, and that row's end.
        let mut rest = Some(table.buffers.with_grad(()));
        let (mut k, mut end) = (0, 0);
        std::iter::from_fn(move || {
            let start = grad.rows.get(k)? * row_len;
            let (_, tail) = rest.take()?.split_at(start - end);
            let (row, tail) = tail.split_at(row_len);
            let piece = Piece {
                buffers: row.with_grad(grad.row(k)),
                tensor,
                origin: origin.advanced(start),
            };
            (rest, k, end) = (Some(tail), k + 1, start + row_len);
            Some(piece)
        })
    });
    run_pieces(level, &per, pieces, total);
}

/// Step the named rows of `table` (its gradient empty) with the fused kernel,
/// straight from slices of its buffers, where it can run them: a native param
/// and gradient, no master copy, state all of one kind that the kernel reads
/// in its loop, no stochastic rounding. Otherwise hand the table back, to be
/// stepped row by row as pieces of the multi-tensor step.
fn run_fused<'a, T: Float>(
    level: SimdLevel,
    per: &PerTensor<T>,
    table: Piece<'a, T>,
    grad: &'a RowGrad<'a, T>,
) -> Option<Piece<'a, T>> {
    let c = &per.coeffs[table.tensor];
    let plain = per.keys[table.tensor].is_none() && matches!(grad.values, Stored::Native(_));
    match table.fused_kind().filter(|_| plain) {
        Some(Kind::Native) => {
            let kernel = kernel_for::<T, T>(level, c);
            rows_in_parallel(kernel, c, table.into_slices(StoredMut::into_native), grad);
        }
        Some(Kind::Bf16) if fused_16bit_kernel::<T, bf16>(level, c).is_some() => {
            let kernel = fused_16bit_kernel(level, c)?;
            rows_in_parallel(kernel, c, table.into_slices(StoredMut::into_bf16), grad);
        }
        Some(Kind::F16) if fused_16bit_kernel::<T, f16>(level, c).is_some() => {
            let kernel = fused_16bit_kernel(level, c)?;
            rows_in_parallel(kernel, c, table.into_slices(StoredMut::into_f16), grad);
        }
        _ => return Some(table),
    }
    None
}

/// The buffers of `table` (slices of the whole table) cut at the rows of
/// `grad`, each with its gradient.
fn cut_rows<'a, T: Float, S>(
    table: Slices<'a, T, S>,
    grad: &'a RowGrad<'a, T>,
) -> Vec<Slices<'a, T, S>> {
    /// The `len` elements `skip` past the start of `rest`, which keeps what follows
    /// (an empty buffer, one whose variant is off, stays empty).
    fn cut<'a, X>(rest: &mut &'a mut [X], skip: usize, len: usize) -> &'a mut [X] {
        let all = std::mem::take(rest);
        if all.is_empty() {
            return all;
        }
        let (row, tail) = all[skip..].split_at_mut(len);
        *rest = tail;
        row
    }
    let Slices {
        mut param,
        mut exp_avg,
        mut exp_avg_sq,
        mut max_exp_avg_sq,
        mut velocity,
        ..
    } = table;
    let row_len = grad.row_len;
    let mut end = 0;
    let mut rows = Vec::with_capacity(grad.rows.len());
    for (k, &row) in grad.rows.iter().enumerate() {
        let skip = row * row_len - end;
        rows.push(Slices {
            param: cut(&mut param, skip, row_len),
            grad: match grad.row(k) {
                Stored::Native(g) => g,
                _ => &[],
            },
            exp_avg: cut(&mut exp_avg, skip, row_len),
            exp_avg_sq: cut(&mut exp_avg_sq, skip, row_len),
            max_exp_avg_sq: cut(&mut max_exp_avg_sq, skip, row_len),
            velocity: cut(&mut velocity, skip, row_len),
        });
        end = (row + 1) * row_len;
    }
    rows
}

/// Step the rows of `grad` in `table` with `kernel`, on the calling thread
/// and its helpers when there are enough of them; each row is stepped by one
/// thread.
fn rows_in_parallel<'a, T: Float, S: Send>(
    kernel: KernelFn<T, S>,
    c: &Coeffs<T>,
    table: Slices<'a, T, S>,
    grad: &'a RowGrad<'a, T>,
) {
    let rows = cut_rows(table, grad);
    let total = rows.len() * grad.row_len;
    let team = (total > SERIAL_MAX).then(Team::current);
    match team.filter(|t| t.threads() > 1) {
        Some(team) => {
            // Units of whole rows, of about as many elements as the dense step's.
            let per_unit = (unit_len(total, team.threads()) / grad.row_len.max(1)).max(1);
            let mut units = Vec::with_capacity(rows.len().div_ceil(per_unit));
            let mut rows = rows.into_iter();
            loop {
                let unit: Vec<_> = rows.by_ref().take(per_unit).collect();
                if unit.is_empty() {
                    break;
                }
                units.push(unit);
            }
            team.for_each_owned(units, |unit| run_ahead(kernel, c, unit));
        }
        None => run_ahead(kernel, c, rows),
    }
}

/// Rows fetched this many ahead of the one being stepped: they lie at random
/// places in the table, and fetching them early hides the memory's latency.
const AHEAD: usize = 4;

/// Step `rows` in order, each prefetched [`AHEAD`] rows before it is stepped.
fn run_ahead<T: Float, S>(kernel: KernelFn<T, S>, c: &Coeffs<T>, mut rows: Vec<Slices<'_, T, S>>) {
    for i in 0..rows.len() {
        if let Some(next) = rows.get(i + AHEAD) {
            prefetch(next.param);
            prefetch(next.grad);
            prefetch(next.exp_avg);
            prefetch(next.exp_avg_sq);
            prefetch(next.max_exp_avg_sq);
            prefetch(next.velocity);
        }
        let row = std::mem::replace(
            &mut rows[i],
            Slices {
                param: &mut [],
                grad: &[],
                exp_avg: &mut [],
                exp_avg_sq: &mut [],
                max_exp_avg_sq: &mut [],
                velocity: &mut [],
            },
        );
        kernel(c, row);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernel_tests::Rng;
    use crate::{AdamConfig, State};

    const ROWS: usize = 50;
    // Odd, so each row has a vector body and a scalar tail at every level.
    const ROW_LEN: usize = 37;

    /// The table (param, m, v, v_max) after `steps` row-sparse steps of `cfg` at `level`.
    fn stepped(level: SimdLevel, cfg: &AdamConfig, steps: &[(Vec<i64>, Vec<f32>)]) -> Vec<f32> {
        let n = ROWS * ROW_LEN;
        let mut param = Rng(3).vec::<f32>(n, 1.0);
        let (mut m, mut v, mut vmax) = (vec![0.0f32; n], vec![0.0f32; n], vec![0.0f32; n]);
        for (t, (indices, values)) in steps.iter().enumerate() {
            let scalars = [StepScalars::new(cfg, t as u64 + 1).unwrap()];
            let grad = RowGrad::new(indices, Stored::Native(values), ROW_LEN, ROWS).unwrap();
            let state = State::new(&mut m[..], &mut v[..], Some(&mut vmax[..]), None);
            let table = Tensor::new(&mut param[..], (), state, 0)
                .map(|_, w| StoredMut::Native(w), |_| &grad);
            step_rows_with(level, vec![table], &scalars).unwrap();
        }
        [param, m, v, vmax].concat()
    }

    fn steps(rng: &mut Rng) -> Vec<(Vec<i64>, Vec<f32>)> {
        (0..4)
            .map(|_| {
                // 30 draws from 50 rows: some repeat, some rows are never named.
                let indices: Vec<i64> = (0..30)
                    .map(|_| ((rng.next_f64() + 1.0) * 0.5 * ROWS as f64) as i64 % ROWS as i64)
                    .collect();
                let values = rng.vec::<f32>(30 * ROW_LEN, 2.0);
                (indices, values)
            })
            .collect()
    }

    fn configs() -> Vec<AdamConfig> {
        let amsgrad = AdamConfig {
            amsgrad: true,
            weight_decay: 0.1,
            ..Default::default()
        };
        let clipped = AdamConfig {
            max_gradient_norm: 0.5,
            maximize: true,
            ..AdamConfig::adamw()
        };
        vec![AdamConfig::default(), amsgrad, clipped]
    }

    #[test]
    fn simd_levels_agree_bit_for_bit() {
        let steps = steps(&mut Rng(5));
        for cfg in configs() {
            let want = stepped(SimdLevel::Scalar, &cfg, &steps);
            for level in SimdLevel::supported() {
                let got = stepped(level, &cfg, &steps);
                let same = got
                    .iter()
                    .zip(&want)
                    .all(|(a, b)| a.to_bits() == b.to_bits());
                assert!(same, "{level} differs from scalar for {cfg:?}");
            }
        }
    }

    #[test]
    fn rows_never_named_keep_their_param_and_state() {
        let steps = steps(&mut Rng(6));
        let named: std::collections::HashSet<i64> =
            steps.iter().flat_map(|(i, _)| i.iter().copied()).collect();
        let start = Rng(3).vec::<f32>(ROWS * ROW_LEN, 1.0);
        let got = stepped(SimdLevel::detect(), &AdamConfig::default(), &steps);
        let n = ROWS * ROW_LEN;
        for row in (0..ROWS).filter(|r| !named.contains(&(*r as i64))) {
            let at = row * ROW_LEN..(row + 1) * ROW_LEN;
            assert_eq!(got[at.clone()], start[at.clone()], "row {row}");
            for buffer in 1..4 {
                let state = &got[buffer * n..][at.clone()];
                assert!(
                    state.iter().all(|x| *x == 0.0),
                    "row {row}, buffer {buffer}"
                );
            }
        }
        assert!(named.len() < ROWS, "some rows must stay unnamed");
    }

    #[test]
    fn repeated_rows_are_summed_in_the_order_given() {
        let values = [1.0f32, 2.0, 10.0, 20.0, 100.0, 200.0];
        let grad = RowGrad::new(&[4, 1, 4], Stored::Native(&values), 2, 5).unwrap();
        assert_eq!(grad.rows(), [1, 4]);
        let row = |k| match grad.row(k) {
            Stored::Native(r) => r.to_vec(),
            _ => unreachable!(),
        };
        assert_eq!((row(0), row(1)), (vec![10.0, 20.0], vec![101.0, 202.0]));
        // -0 alone stays -0 (a sum started at +0 would not).
        let grad = RowGrad::new(&[0, 0], Stored::Native(&[-0.0f32, -0.0]), 1, 1).unwrap();
        assert!(matches!(grad.row(0), Stored::Native([x]) if x.is_sign_negative()));
    }

    #[test]
    fn bad_indices_and_values_are_errors() {
        let values = [0.0f32; 4];
        let new = |indices: &[i64], values: &[f32]| {
            RowGrad::new(indices, Stored::Native(values), 2, 3).err()
        };
        let out = |position, row| StepError::RowOutOfRange {
            position,
            row,
            rows: 3,
        };
        assert_eq!(new(&[0, 3], &values), Some(out(1, 3)));
        assert_eq!(new(&[-1, 0], &values), Some(out(0, -1)));
        let short = StepError::RowValues {
            expected: 4,
            got: 3,
        };
        assert_eq!(new(&[0, 1], &values[..3]), Some(short));
    }

    #[test]
    fn a_table_that_is_not_the_param_or_splits_8_bit_blocks_is_refused() {
        let scalars = [StepScalars::new(&AdamConfig::default(), 1).unwrap()];
        let grad = RowGrad::new(&[0], Stored::Native(&[1.0f32; 3]), 3, 4).unwrap();
        let (mut p, mut m, mut v) = (vec![0.0f32; 10], vec![0.0f32; 10], vec![0.0f32; 10]);
        let state = State::new(&mut m[..], &mut v[..], None, None);
        let table =
            Tensor::new(&mut p[..], (), state, 0).map(|_, w| StoredMut::Native(w), |_| &grad);
        let err = check_rows(vec![table], &scalars).err();
        let table_err = StepError::RowTable {
            index: 0,
            rows: 4,
            row_len: 3,
            len: 10,
        };
        assert_eq!(err, Some(table_err));

        let n = 2 * Q8_BLOCK + 2;
        let row_len = n / 2;
        let values = vec![1.0f32; row_len];
        let grad = RowGrad::new(&[1], Stored::Native(&values), row_len, 2).unwrap();
        let mut p = vec![0.0f32; n];
        let mut codes = [vec![0u8; n], vec![0u8; n]];
        let mut absmax = [vec![0.0f32; 3], vec![0.0f32; 3]];
        let state = crate::q8_tests::q8_state(&mut codes, &mut absmax);
        let table = Tensor::new(StoredMut::Native(&mut p[..]), &grad, state, 0);
        let err = check_rows(vec![table], &scalars).err();
        assert_eq!(err, Some(StepError::Q8RowLength { index: 0, row_len }));
    }
}
