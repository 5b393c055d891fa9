//! Multi-tensor steps: one call updates a whole list of tensors.
//!
//! The tensors are laid end to end in one flat index space and cut into
//! pieces of at most [`CHUNK`] elements (a piece may span several small
//! tensors); rayon runs the pieces in parallel. The cut depends only on the
//! tensor sizes, never on the thread count, and the kernel is element-wise,
//! so the result is the same bit for bit on any number of threads.

use rayon::prelude::*;

use crate::element::Float;
use crate::error::StepError;
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
    pub exp_avg_sq: &'a mut [T],
    /// AMSGrad's running max of `exp_avg_sq`; required when the group uses AMSGrad.
    pub max_exp_avg_sq: Option<&'a mut [T]>,
    pub group: usize,
}

/// One piece of one tensor: what a kernel call gets.
struct Piece<'a, T> {
    param: &'a mut [T],
    grad: &'a [T],
    exp_avg: &'a mut [T],
    exp_avg_sq: &'a mut [T],
    max_exp_avg_sq: &'a mut [T],
    group: usize,
}

impl<'a, T> Piece<'a, T> {
    fn len(&self) -> usize {
        self.param.len()
    }

    fn split_at(self, mid: usize) -> (Self, Self) {
        let (p0, p1) = self.param.split_at_mut(mid);
        let (g0, g1) = self.grad.split_at(mid);
        let (m0, m1) = self.exp_avg.split_at_mut(mid);
        let (v0, v1) = self.exp_avg_sq.split_at_mut(mid);
        let x_mid = mid.min(self.max_exp_avg_sq.len());
        let (x0, x1) = self.max_exp_avg_sq.split_at_mut(x_mid);
        let group = self.group;
        (
            Piece {
                param: p0,
                grad: g0,
                exp_avg: m0,
                exp_avg_sq: v0,
                max_exp_avg_sq: x0,
                group,
            },
            Piece {
                param: p1,
                grad: g1,
                exp_avg: m1,
                exp_avg_sq: v1,
                max_exp_avg_sq: x1,
                group,
            },
        )
    }
}

/// Check that every buffer fits its param and its group, before anything is written.
fn check<T>(tensors: &[TensorMut<'_, T>], groups: &[StepScalars]) -> Result<(), StepError> {
    for (index, t) in tensors.iter().enumerate() {
        let expected = t.param.len();
        let lengths = [
            ("grad", t.grad.len()),
            ("exp_avg", t.exp_avg.len()),
            ("exp_avg_sq", t.exp_avg_sq.len()),
        ];
        for (buffer, got) in lengths {
            if got != expected {
                return Err(StepError::LengthMismatch {
                    index,
                    buffer,
                    expected,
                    got,
                });
            }
        }
        let scalars = groups.get(t.group).ok_or(StepError::GroupOutOfRange {
            index,
            group: t.group,
            groups: groups.len(),
        })?;
        match &t.max_exp_avg_sq {
            Some(max) if max.len() != expected => {
                return Err(StepError::LengthMismatch {
                    index,
                    buffer: "max_exp_avg_sq",
                    expected,
                    got: max.len(),
                })
            }
            None if scalars.amsgrad => return Err(StepError::MissingMaxBuffer { index }),
            _ => {}
        }
    }
    Ok(())
}

fn run_piece<T: Float>(level: SimdLevel, coeffs: &[Coeffs<T>], piece: Piece<'_, T>) {
    let c = &coeffs[piece.group];
    let kernel = kernel_for(level, c);
    kernel(
        c,
        piece.param,
        piece.grad,
        piece.exp_avg,
        piece.exp_avg_sq,
        piece.max_exp_avg_sq,
    );
}

/// Cut the tensors, laid end to end, into units of about [`CHUNK`] elements.
fn plan<'a, T>(pieces: Vec<Piece<'a, T>>) -> Vec<Vec<Piece<'a, T>>> {
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

/// One Adam step over many tensors at the detected SIMD level, on rayon's
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
    let coeffs: Vec<Coeffs<T>> = groups.iter().map(|s| s.coeffs()).collect();
    let total: usize = tensors.iter().map(|t| t.param.len()).sum();
    let pieces = tensors.into_iter().map(|t| Piece {
        param: t.param,
        grad: t.grad,
        exp_avg: t.exp_avg,
        exp_avg_sq: t.exp_avg_sq,
        max_exp_avg_sq: t.max_exp_avg_sq.unwrap_or_default(),
        group: t.group,
    });
    if total <= SERIAL_MAX || rayon::current_num_threads() == 1 {
        pieces.for_each(|piece| run_piece(level, &coeffs, piece));
    } else {
        plan(pieces.collect()).into_par_iter().for_each(|unit| {
            unit.into_iter()
                .for_each(|piece| run_piece(level, &coeffs, piece))
        });
    }
    Ok(())
}
