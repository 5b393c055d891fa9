//! Multi-tensor steps: one call updates a whole list of tensors.
//!
//! The tensors are laid end to end in one flat index space and cut into
//! pieces of at most [`CHUNK`] elements (a piece may span several small
//! tensors); rayon runs the pieces in parallel. The cut depends only on the
//! tensor sizes, never on the thread count, and the kernel is element-wise,
//! so the result is the same bit for bit on any number of threads. The one
//! reduction (the gradient norm for clipping) sums in a fixed order too.

use rayon::prelude::*;

use crate::element::Float;
use crate::error::StepError;
use crate::kernel::Slices;
use crate::scalars::{Coeffs, StepScalars};
use crate::simd::{kernel_for, SimdLevel};

/// Elements per unit of parallel work: 32Ki elements keep the four f32
/// streams of one unit (512 KiB) inside a core's L2 cache.
pub const CHUNK: usize = 1 << 15;
/// Below this many elements in total the step runs on the calling thread:
/// waking the pool costs more than it saves.
pub const SERIAL_MAX: usize = 1 << 16;
/// Cuts inside a tensor fall on multiples of this many elements (a 64-byte
/// cache line of f32 times 16), so pieces start aligned when the tensor does.
const CUT_ALIGN: usize = 256;

/// The buffers of one tensor for one step. `group` indexes the per-group
/// [`StepScalars`] passed to [`step_tensors`].
pub struct TensorMut<'a, T> {
    pub param: &'a mut [T],
    pub grad: &'a [T],
    pub exp_avg: &'a mut [T],
    /// v for Adam; u, the infinity norm, for AdaMax.
    pub exp_avg_sq: &'a mut [T],
    /// AMSGrad's running max of `exp_avg_sq`; required when the group uses AMSGrad.
    pub max_exp_avg_sq: Option<&'a mut [T]>,
    /// The momentum velocity; required when the group uses momentum or Nesterov.
    pub velocity: Option<&'a mut [T]>,
    pub group: usize,
}

/// One piece of one tensor: what a kernel call gets. `tensor` indexes the
/// per-tensor coefficients.
struct Piece<'a, T> {
    slices: Slices<'a, T>,
    tensor: usize,
}

/// Split an optional buffer (empty when its variant is off) like the others.
fn split_opt<T>(s: &mut [T], mid: usize) -> (&mut [T], &mut [T]) {
    s.split_at_mut(mid.min(s.len()))
}

impl<T> Piece<'_, T> {
    fn len(&self) -> usize {
        self.slices.param.len()
    }

    fn split_at(self, mid: usize) -> (Self, Self) {
        let s = self.slices;
        let (p0, p1) = s.param.split_at_mut(mid);
        let (g0, g1) = s.grad.split_at(mid);
        let (m0, m1) = s.exp_avg.split_at_mut(mid);
        let (v0, v1) = s.exp_avg_sq.split_at_mut(mid);
        let (x0, x1) = split_opt(s.max_exp_avg_sq, mid);
        let (u0, u1) = split_opt(s.velocity, mid);
        let tensor = self.tensor;
        let head = Slices {
            param: p0,
            grad: g0,
            exp_avg: m0,
            exp_avg_sq: v0,
            max_exp_avg_sq: x0,
            velocity: u0,
        };
        let tail = Slices {
            param: p1,
            grad: g1,
            exp_avg: m1,
            exp_avg_sq: v1,
            max_exp_avg_sq: x1,
            velocity: u1,
        };
        (
            Piece {
                slices: head,
                tensor,
            },
            Piece {
                slices: tail,
                tensor,
            },
        )
    }
}

/// Check that every buffer fits its param and its group, before anything is written.
fn check<T>(tensors: &[TensorMut<'_, T>], groups: &[StepScalars]) -> Result<(), StepError> {
    for (index, t) in tensors.iter().enumerate() {
        let expected = t.param.len();
        let scalars = groups.get(t.group).ok_or(StepError::GroupOutOfRange {
            index,
            group: t.group,
            groups: groups.len(),
        })?;
        let optional = |buffer: &Option<&mut [T]>, needed: bool, name| match buffer {
            Some(b) => Some((name, b.len())),
            None if needed => Some((name, usize::MAX)),
            None => None,
        };
        let lengths = [
            Some(("grad", t.grad.len())),
            Some(("exp_avg", t.exp_avg.len())),
            Some(("exp_avg_sq", t.exp_avg_sq.len())),
            optional(&t.max_exp_avg_sq, scalars.amsgrad, "max_exp_avg_sq"),
            optional(&t.velocity, scalars.velocity, "velocity"),
        ];
        for (buffer, got) in lengths.into_iter().flatten() {
            if got == usize::MAX {
                return Err(StepError::MissingBuffer { index, buffer });
            }
            if got != expected {
                return Err(StepError::LengthMismatch {
                    index,
                    buffer,
                    expected,
                    got,
                });
            }
        }
    }
    Ok(())
}

/// Sum of squares in f64 in a fixed order: eight interleaved partial sums
/// combined pairwise, so the value is the same at every SIMD level.
fn sum_squares<T: Float>(x: &[T]) -> f64 {
    let mut acc = [0.0f64; 8];
    let chunks = x.chunks_exact(8);
    let rest = chunks.remainder();
    for c in chunks {
        for (a, v) in acc.iter_mut().zip(c) {
            let v = v.to_f64();
            *a += v * v;
        }
    }
    for (a, v) in acc.iter_mut().zip(rest) {
        let v = v.to_f64();
        *a += v * v;
    }
    ((acc[0] + acc[4]) + (acc[1] + acc[5])) + ((acc[2] + acc[6]) + (acc[3] + acc[7]))
}

/// The L2 norm of a gradient: blocks of [`CHUNK`] summed (in parallel when
/// large), then the block sums added in order, so no thread count changes it.
pub fn grad_norm<T: Float>(grad: &[T]) -> f64 {
    let total = if grad.len() <= SERIAL_MAX {
        grad.chunks(CHUNK).map(sum_squares).sum::<f64>()
    } else {
        let blocks: Vec<f64> = grad.par_chunks(CHUNK).map(sum_squares).collect();
        blocks.into_iter().sum::<f64>()
    };
    total.sqrt()
}

fn run_piece<T: Float>(level: SimdLevel, coeffs: &[Coeffs<T>], piece: Piece<'_, T>) {
    let c = &coeffs[piece.tensor];
    kernel_for(level, c)(c, piece.slices);
}

/// Cut the tensors, laid end to end, into units of about [`CHUNK`] elements.
fn plan<'a, T>(pieces: impl Iterator<Item = Piece<'a, T>>) -> Vec<Vec<Piece<'a, T>>> {
    let mut units = Vec::new();
    let mut unit = Vec::new();
    let mut filled = 0;
    for mut rest in pieces {
        while rest.len() > 0 {
            let room = CHUNK - filled;
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
        if filled >= CHUNK {
            units.push(std::mem::take(&mut unit));
            filled = 0;
        }
    }
    if !unit.is_empty() {
        units.push(unit);
    }
    units
}

/// One step over many tensors at the detected SIMD level, on rayon's
/// current thread pool. `groups[i]` holds the scalars of group `i`.
pub fn step_tensors<T: Float>(
    tensors: Vec<TensorMut<'_, T>>,
    groups: &[StepScalars],
) -> Result<(), StepError> {
    step_tensors_with(SimdLevel::detect(), tensors, groups)
}

/// [`step_tensors`] at a chosen SIMD level (an error if this CPU lacks it).
pub fn step_tensors_with<T: Float>(
    level: SimdLevel,
    tensors: Vec<TensorMut<'_, T>>,
    groups: &[StepScalars],
) -> Result<(), StepError> {
    if !level.is_supported() {
        return Err(StepError::UnsupportedSimd(level.name()));
    }
    check(&tensors, groups)?;
    let coeffs: Vec<Coeffs<T>> = tensors
        .iter()
        .map(|t| {
            let s = &groups[t.group];
            let scale = if s.clips_norm() {
                s.norm_scale(grad_norm(t.grad))
            } else {
                1.0
            };
            s.coeffs(scale)
        })
        .collect();
    let total: usize = tensors.iter().map(|t| t.param.len()).sum();
    let pieces = tensors.into_iter().enumerate().map(|(tensor, t)| Piece {
        slices: Slices {
            param: t.param,
            grad: t.grad,
            exp_avg: t.exp_avg,
            exp_avg_sq: t.exp_avg_sq,
            max_exp_avg_sq: t.max_exp_avg_sq.unwrap_or_default(),
            velocity: t.velocity.unwrap_or_default(),
        },
        tensor,
    });
    if total <= SERIAL_MAX || rayon::current_num_threads() == 1 {
        pieces.for_each(|piece| run_piece(level, &coeffs, piece));
    } else {
        plan(pieces).into_par_iter().for_each(|unit| {
            unit.into_iter()
                .for_each(|piece| run_piece(level, &coeffs, piece))
        });
    }
    Ok(())
}
