//! Multi-tensor steps: one call updates a whole list of tensors.
//!
//! The tensors are laid end to end in one flat index space and cut into
//! units of at most [`CHUNK`] elements (a unit may span several small
//! tensors; a small step is cut finer so every thread gets work); the caller
//! and its helpers (`team.rs`) run them in parallel. The kernel is
//! element-wise, so neither the cut nor the thread that runs a unit changes
//! a bit of the result. The one reduction (the gradient norm for clipping)
//! sums fixed blocks in a fixed order.

use std::sync::OnceLock;

use crate::element::Float;
use crate::error::StepError;
use crate::kernel::{Coeffs, Slices};
use crate::quant::{blocks, Q8Piece, Q8State, StochasticKey};
use crate::scalars::StepScalars;
use crate::simd::{fused_16bit_kernel, kernel_for, SimdLevel};
use crate::staged::{run_staged, Rounding};
use crate::storage::{Kind, Split, Stored, StoredMut, Q8_BLOCK};
use crate::team::Team;
#[cfg(doc)]
use crate::tensor::TensorMut;
use crate::tensor::{Buffer, MixedTensorMut, Origin};

/// Elements per unit of parallel work: 32Ki elements keep the four f32
/// streams of one unit (512 KiB) inside a core's L2 cache.
pub const CHUNK: usize = 1 << 15;
/// Up to this many elements in total the step runs on the calling thread:
/// handing work to a helper costs about 2-3 us, which a smaller step does not
/// win back (measured with 2 threads: equal at 48K f32 elements, 1.2x faster
/// on 2 threads at 64K).
pub const SERIAL_MAX: usize = 3 << 14;
/// The shortest unit a small step is cut into: shorter ones cost more in
/// coordination than they gain in balance.
const MIN_UNIT: usize = 1 << 12;
/// Cuts inside a tensor fall on multiples of this many elements (a 64-byte
/// cache line of f32 times 16), so pieces start aligned when the tensor does.
const CUT_ALIGN: usize = 256;
// Cuts fall on 8-bit state's block boundaries too, so no block is split
// between units (and threads).
const _: () = assert!(CUT_ALIGN % Q8_BLOCK == 0);

/// One piece of one tensor: what a kernel call gets. `tensor` indexes the
/// per-tensor coefficients and rounding keys; `origin` is where the piece's
/// first element sits in its optimizer.
pub(crate) struct Piece<'a, T> {
    pub(crate) buffers: MixedTensorMut<'a, T>,
    pub(crate) tensor: usize,
    pub(crate) origin: Origin,
}

impl<'a, T> Piece<'a, T> {
    fn len(&self) -> usize {
        self.buffers.param.len()
    }

    pub(crate) fn split_at(self, mid: usize) -> (Self, Self) {
        let (head, tail) = self.buffers.split_at(mid);
        let (tensor, origin) = (self.tensor, self.origin);
        (
            Piece {
                buffers: head,
                tensor,
                origin,
            },
            Piece {
                buffers: tail,
                tensor,
                origin: origin.advanced(mid),
            },
        )
    }

    /// How the fused kernel can run this piece: param and grad native, no
    /// master copy, and every state buffer stored alike.
    pub(crate) fn fused_kind(&self) -> Option<Kind> {
        let b = &self.buffers;
        let plain = matches!(
            (&b.param, &b.grad),
            (StoredMut::Native(_), Stored::Native(_))
        );
        if !plain || b.master_param.is_some() {
            return None;
        }
        let mut kinds = b.state.buffers().map(|(_, s)| s.kind());
        let first = kinds.next().unwrap_or(Kind::Native);
        kinds.all(|k| k == first).then_some(first)
    }
}

impl<'a, T: Float> Piece<'a, T> {
    /// The 8-bit fused step's view, for f32 (None for another compute type).
    fn into_q8(self) -> Option<Q8Piece<'a>> {
        let b = self.buffers;
        let q8 = |s: StoredMut<'a, T>| {
            let (codes, absmax) = s.into_q8();
            Q8State { codes, absmax }
        };
        Some(Q8Piece {
            param: T::as_f32_mut(b.param.into_native())?,
            grad: match b.grad {
                Stored::Native(g) => T::as_f32(g)?,
                _ => &[],
            },
            exp_avg: q8(b.state.exp_avg),
            exp_avg_sq: q8(b.state.exp_avg_sq),
            max_exp_avg_sq: b.state.max_exp_avg_sq.map(q8),
            velocity: b.state.velocity.map(q8),
        })
    }

    /// Whether any state buffer is stored in 8 bits (then the piece is only cut on blocks).
    fn has_q8(&self) -> bool {
        self.buffers
            .state
            .buffers()
            .any(|(_, s)| s.kind() == Kind::Q8)
    }

    /// The kernel's view, with the state taken by `state` (which sees only
    /// buffers of the kind [`Piece::fused_kind`] found); buffers that are off are empty.
    pub(crate) fn into_slices<S>(
        self,
        state: fn(StoredMut<'a, T>) -> &'a mut [S],
    ) -> Slices<'a, T, S> {
        let b = self.buffers;
        let s = b.state;
        Slices {
            param: b.param.into_native(),
            grad: match b.grad {
                Stored::Native(g) => g,
                _ => &[],
            },
            exp_avg: state(s.exp_avg),
            exp_avg_sq: state(s.exp_avg_sq),
            max_exp_avg_sq: s.max_exp_avg_sq.map_or_else(Default::default, state),
            velocity: s.velocity.map_or_else(Default::default, state),
        }
    }
}

/// Tensors that a check ([`check_mixed`], [`crate::check_rows`]) found to fit
/// their params, gradients and groups, ready to step with nothing left to check.
pub struct Checked<'g, X> {
    pub(crate) tensors: Vec<X>,
    pub(crate) groups: &'g [StepScalars],
}

impl<'g, X> Checked<'g, X> {
    /// `check` (given each tensor's index) on every tensor, writing nothing;
    /// the first error is returned.
    pub(crate) fn each(
        tensors: Vec<X>,
        groups: &'g [StepScalars],
        check: impl Fn(usize, &X) -> Result<(), StepError>,
    ) -> Result<Self, StepError> {
        for (index, t) in tensors.iter().enumerate() {
            check(index, t)?;
        }
        Ok(Checked { tensors, groups })
    }
}

/// Dense tensors that [`check_mixed`] found to fit their params and groups.
pub type CheckedTensors<'a, 'g, T> = Checked<'g, MixedTensorMut<'a, T>>;

/// Check that every buffer fits its param and its group, writing nothing: what
/// [`step_tensors`] does before it writes. A caller that steps several lists
/// (float32 and float64 tensors, say) checks them all before stepping any, so
/// that an error in one leaves the others unwritten too.
pub fn check_mixed<'a, 'g, T: Float>(
    tensors: Vec<MixedTensorMut<'a, T>>,
    groups: &'g [StepScalars],
) -> Result<CheckedTensors<'a, 'g, T>, StepError> {
    Checked::each(tensors, groups, |index, t| {
        check_tensor(index, t, t.grad.len(), groups)
    })
}

/// Check that the buffers of tensor `index` (of gradient length `grad_len`) fit
/// its param and its group: [`check_mixed`]'s check of one tensor, whatever its
/// gradient is.
pub(crate) fn check_tensor<T: Float, R>(
    index: usize,
    t: &crate::tensor::Tensor<StoredMut<'_, T>, R>,
    grad_len: usize,
    groups: &[StepScalars],
) -> Result<(), StepError> {
    let expected = t.param.len();
    let scalars = groups.get(t.group).ok_or(StepError::GroupOutOfRange {
        index,
        group: t.group,
        groups: groups.len(),
    })?;
    let state = &t.state;
    for (needed, present, buffer) in [
        (
            scalars.amsgrad,
            state.max_exp_avg_sq.is_some(),
            Buffer::MaxExpAvgSq,
        ),
        (scalars.velocity, state.velocity.is_some(), Buffer::Velocity),
    ] {
        if needed && !present {
            let buffer = buffer.name();
            return Err(StepError::MissingBuffer { index, buffer });
        }
    }
    if matches!(t.master_param, Some(StoredMut::Bf16(_) | StoredMut::F16(_))) {
        return Err(StepError::MasterNotNative { index });
    }
    // Stochastic rounding stores f32 results into a 16-bit param, nothing else.
    let sixteen = matches!(t.param, StoredMut::Bf16(_) | StoredMut::F16(_));
    let rounds = sixteen && t.master_param.is_none() && T::as_f32(&[]).is_some();
    if scalars.rounding_seed.is_some() && !rounds {
        return Err(StepError::RoundingNot16Bit { index });
    }
    let others = t.written().filter(|(b, _)| *b != Buffer::Param);
    let written = others.map(|(b, w)| (b.name(), w.len(), expected));
    // An 8-bit buffer's absmax: one per block.
    let scales = t.state.buffers().filter_map(|(b, w)| match w {
        StoredMut::Q8 { absmax, .. } => Some((b.absmax_name(), absmax.len(), blocks(expected))),
        _ => None,
    });
    let lengths = std::iter::once((Buffer::Grad.name(), grad_len, expected));
    for (buffer, got, expected) in lengths.chain(written).chain(scales) {
        if got != expected {
            return Err(StepError::LengthMismatch {
                index,
                buffer,
                expected,
                got,
            });
        }
    }
    Ok(())
}

impl<'a, T: Float> Checked<'_, MixedTensorMut<'a, T>> {
    /// The tensors, to read (their grads, say) before they are stepped.
    pub fn tensors(&self) -> &[MixedTensorMut<'a, T>] {
        &self.tensors
    }

    /// Step them at the detected SIMD level.
    pub fn step(self) {
        run_checked(SimdLevel::detect(), self);
    }
}

/// Sum of squares in f64 in a fixed order: eight interleaved partial sums
/// combined pairwise, so the value is the same at every SIMD level.
pub(crate) fn sum_squares<X: Copy>(x: &[X], to_f64: impl Fn(X) -> f64) -> f64 {
    let mut acc = [0.0f64; 8];
    let chunks = x.chunks_exact(8);
    let rest = chunks.remainder();
    for c in chunks {
        for (a, &v) in acc.iter_mut().zip(c) {
            let v = to_f64(v);
            *a += v * v;
        }
    }
    for (a, &v) in acc.iter_mut().zip(rest) {
        let v = to_f64(v);
        *a += v * v;
    }
    ((acc[0] + acc[4]) + (acc[1] + acc[5])) + ((acc[2] + acc[6]) + (acc[3] + acc[7]))
}

pub(crate) fn stored_sum_squares<T: Float>(grad: Stored<'_, T>) -> f64 {
    match grad {
        Stored::Native(s) => sum_squares(s, T::to_f64),
        Stored::Bf16(s) => sum_squares(s, |x| x.to_f64()),
        Stored::F16(s) => sum_squares(s, |x| x.to_f64()),
    }
}

/// The L2 norm of a gradient: blocks of [`CHUNK`] summed (in parallel when
/// large), then the block sums added in order, so no thread count changes it.
pub fn grad_norm<T: Float>(grad: &[T]) -> f64 {
    stored_grad_norm(Stored::Native(grad))
}

pub(crate) fn stored_grad_norm<T: Float>(grad: Stored<'_, T>) -> f64 {
    let n = grad.len();
    let blocks = n.div_ceil(CHUNK);
    let block = |i: usize| {
        let (_, rest) = grad.split_at(i * CHUNK);
        let (b, _) = rest.split_at(CHUNK.min(n - i * CHUNK));
        stored_sum_squares(b)
    };
    let total = if n <= SERIAL_MAX {
        (0..blocks).map(block).sum::<f64>()
    } else {
        let sums: Vec<OnceLock<f64>> = (0..blocks).map(|_| OnceLock::new()).collect();
        Team::current().for_each_shared(blocks, |i| {
            let _ = sums[i].set(block(i));
        });
        sums.into_iter()
            .filter_map(OnceLock::into_inner)
            .sum::<f64>()
    };
    total.sqrt()
}

/// What a step gives each tensor: its coefficients, and the key of its
/// stochastic rounding when its group rounds so.
pub(crate) struct PerTensor<T> {
    pub(crate) coeffs: Vec<Coeffs<T>>,
    pub(crate) keys: Vec<Option<StochasticKey>>,
}

fn run_piece<T: Float>(level: SimdLevel, per: &PerTensor<T>, piece: Piece<'_, T>) {
    // NumPy's large arrays start 16 bytes past a cache line, so every 64-byte
    // vector access would straddle two lines. A short head run up to the
    // param's first line boundary aligns the rest (and every buffer that
    // shares the param's offset, as NumPy's allocations do).
    // 8-bit state is cut on its blocks only.
    let head = piece.buffers.param.to_line_boundary();
    if head > 0 && head < piece.len() && !piece.has_q8() {
        let (head, rest) = piece.split_at(head);
        run_aligned(level, per, head);
        run_aligned(level, per, rest);
    } else {
        run_aligned(level, per, piece);
    }
}

fn run_aligned<T: Float>(level: SimdLevel, per: &PerTensor<T>, piece: Piece<'_, T>) {
    let c = &per.coeffs[piece.tensor];
    // A 16-bit param rounded stochastically (checked: no master copy, f32) is staged.
    if let Some(key) = per.keys[piece.tensor] {
        let rounding = Some(Rounding {
            key,
            first: piece.origin.element,
        });
        return run_staged(level, kernel_for(level, c), c, piece.buffers, rounding);
    }
    // Native params and grads with state all of one kind run the fused
    // kernel, converting 16-bit state in its loop (8-bit state: `quant`'s
    // fused block step, for f32); anything else (16-bit params, a master
    // copy) is staged through f32 blocks.
    match piece.fused_kind() {
        Some(Kind::Native) => {
            kernel_for::<T, T>(level, c)(c, piece.into_slices(StoredMut::into_native))
        }
        Some(Kind::Bf16) => match fused_16bit_kernel(level, c) {
            Some(kernel) => kernel(c, piece.into_slices(StoredMut::into_bf16)),
            None => run_staged(level, kernel_for(level, c), c, piece.buffers, None),
        },
        Some(Kind::F16) => match fused_16bit_kernel(level, c) {
            Some(kernel) => kernel(c, piece.into_slices(StoredMut::into_f16)),
            None => run_staged(level, kernel_for(level, c), c, piece.buffers, None),
        },
        Some(Kind::Q8) => match (c as &dyn std::any::Any).downcast_ref::<Coeffs<f32>>() {
            Some(c32) => {
                let q8 = piece.into_q8();
                // Some for f32, which the downcast found; the level is supported
                // (checked by the caller), so the step cannot fail.
                if let Some(q8) = q8 {
                    let _ = crate::quant::run_piece(level, kernel_for(level, c32), c32, q8);
                }
            }
            None => run_staged(level, kernel_for(level, c), c, piece.buffers, None),
        },
        None => run_staged(level, kernel_for(level, c), c, piece.buffers, None),
    }
}

/// Elements per unit for a step of `total` elements on `threads` threads:
/// [`CHUNK`], or less when that would leave a thread idle or the last
/// unit long (at least four units per thread; never under [`MIN_UNIT`]).
pub(crate) fn unit_len(total: usize, threads: usize) -> usize {
    total
        .div_ceil(threads * 4)
        .next_multiple_of(CUT_ALIGN)
        .clamp(MIN_UNIT, CHUNK)
}

/// Cut the tensors, laid end to end, into units of about `chunk` elements.
fn plan<'a, T>(pieces: impl Iterator<Item = Piece<'a, T>>, chunk: usize) -> Vec<Vec<Piece<'a, T>>> {
    let mut units = Vec::new();
    let mut unit = Vec::new();
    let mut filled = 0;
    for mut rest in pieces {
        while rest.len() > 0 {
            let room = chunk - filled;
            if rest.len() <= room {
                filled += rest.len();
                unit.push(rest);
                break;
            }
            let cut = room.next_multiple_of(CUT_ALIGN).min(rest.len());
            let (head, tail) = rest.split_at(cut);
            unit.push(head);
            units.push(std::mem::take(&mut unit));
            filled = 0;
            rest = tail;
        }
        if filled >= chunk {
            units.push(std::mem::take(&mut unit));
            filled = 0;
        }
    }
    if !unit.is_empty() {
        units.push(unit);
    }
    units
}

/// One step over many tensors at the detected SIMD level, on the calling
/// thread and its helpers (the current rayon pool when called on one).
/// `groups[i]` holds the scalars of group `i`. The tensors are [`TensorMut`]s
/// (every buffer stored as `T`) or [`MixedTensorMut`]s (some in 16 bits).
pub fn step_tensors<'a, T: Float>(
    tensors: Vec<impl Into<MixedTensorMut<'a, T>>>,
    groups: &[StepScalars],
) -> Result<(), StepError> {
    step_tensors_with(SimdLevel::detect(), tensors, groups)
}

/// [`step_tensors`] at a chosen SIMD level (an error if this CPU lacks it).
pub fn step_tensors_with<'a, T: Float>(
    level: SimdLevel,
    tensors: Vec<impl Into<MixedTensorMut<'a, T>>>,
    groups: &[StepScalars],
) -> Result<(), StepError> {
    if !level.is_supported() {
        return Err(StepError::UnsupportedSimd(level.name()));
    }
    let tensors = tensors.into_iter().map(Into::into).collect();
    run_checked(level, check_mixed(tensors, groups)?);
    Ok(())
}

/// One step over checked tensors, at a level this CPU supports.
fn run_checked<T: Float>(level: SimdLevel, checked: CheckedTensors<'_, '_, T>) {
    let Checked { tensors, groups } = checked;
    let origins: Vec<Origin> = (tensors.iter().enumerate())
        .map(|(i, t)| origin_of(i, t.origin))
        .collect();
    let per = PerTensor::new(
        groups,
        tensors
            .iter()
            .zip(&origins)
            .map(|(t, o)| (t.group, o.tensor)),
        |i| stored_grad_norm(tensors[i].grad),
    );
    let total: usize = tensors.iter().map(|t| t.param.len()).sum();
    let pieces = tensors
        .into_iter()
        .zip(origins)
        .enumerate()
        .map(|(tensor, (buffers, origin))| Piece {
            origin,
            buffers,
            tensor,
        });
    run_pieces(level, &per, pieces, total);
}

/// Where tensor `i` of a call sits in its optimizer: `origin`, or its position in the call.
pub(crate) fn origin_of(i: usize, origin: Option<Origin>) -> Origin {
    origin.unwrap_or(Origin {
        tensor: i as u64,
        element: 0,
    })
}

impl<T: Float> PerTensor<T> {
    /// The coefficients and rounding keys of tensors given as (group, position
    /// in the optimizer); `grad_norm(i)` is tensor i's raw gradient norm,
    /// asked only where its group clips by norm.
    pub(crate) fn new(
        groups: &[StepScalars],
        tensors: impl Iterator<Item = (usize, u64)>,
        grad_norm: impl Fn(usize) -> f64,
    ) -> Self {
        // Sized once: grown push by push, a step of many small tensors spent
        // longer copying these than stepping.
        let n = tensors.size_hint().0;
        let mut per = PerTensor {
            coeffs: Vec::with_capacity(n),
            keys: Vec::with_capacity(n),
        };
        for (i, (group, position)) in tensors.enumerate() {
            let s = &groups[group];
            let scale = if s.clips_norm() {
                s.norm_scale(grad_norm(i))
            } else {
                1.0
            };
            per.coeffs.push(s.coeffs(scale));
            per.keys.push(s.rounding_seed.map(|seed| StochasticKey {
                seed,
                step: s.step,
                tensor: position,
            }));
        }
        per
    }
}

/// Run `pieces` (of `total` elements in all), on the calling thread and its
/// helpers when the step is large enough; each piece is run by one thread.
pub(crate) fn run_pieces<'a, T: Float>(
    level: SimdLevel,
    per: &PerTensor<T>,
    pieces: impl Iterator<Item = Piece<'a, T>>,
    total: usize,
) {
    // Small steps never ask for the helpers (that costs a lock and a getpid).
    let team = (total > SERIAL_MAX).then(Team::current);
    let threads = team.map_or(1, Team::threads);
    match team {
        Some(team) if threads > 1 => {
            // Which thread runs a unit never changes its result.
            let units = plan(pieces, unit_len(total, threads));
            team.for_each_owned(units, |unit| {
                unit.into_iter()
                    .for_each(|piece| run_piece(level, per, piece))
            });
        }
        _ => pieces.for_each(|piece| run_piece(level, per, piece)),
    }
}
