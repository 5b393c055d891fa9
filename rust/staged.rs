//! Pieces the fused kernel cannot read in place: a 16-bit param, a master
//! copy, or 16-bit state of a compute type with no in-loop conversions.
//!
//! The kernel only sees the compute type. Such a piece is processed in blocks
//! of [`BLOCK`] elements: each buffer of a block is widened into a buffer on
//! the stack (native ones are copied too: simpler, and cheap next to the
//! conversions), stepped, and rounded back to nearest even. Rounding is exact
//! IEEE, so the result does not depend on the SIMD level. A 16-bit param
//! may instead be rounded stochastically, from a counter-based hash of its
//! element's place, which no SIMD level or thread count changes either.

use crate::element::Float;
use crate::kernel::{Coeffs, Slices};
use crate::quant::stochastic::round_checked;
use crate::quant::StochasticKey;
use crate::simd::{KernelFn, SimdLevel};
use crate::storage::{load, load_grad, store, StoredMut};
use crate::tensor::MixedTensorMut;

/// Stochastic rounding of a piece's 16-bit param: the SIMD level to run it
/// at, the tensor's key, and the index in the tensor of the piece's first element.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Rounding {
    pub(crate) level: SimdLevel,
    pub(crate) key: StochasticKey,
    pub(crate) first: u64,
}

/// Elements per staged block: six buffers of this size fit in L1.
pub(crate) const BLOCK: usize = 256;

/// Run `kernel` over a piece, a block at a time. With a master copy, the
/// master is what the kernel updates and the param receives it rounded.
/// With `rounding`, a 16-bit param (computed in f32, no master copy: checked
/// by the step) is stored rounded stochastically instead of to nearest.
pub(crate) fn run_staged<T: Float>(
    kernel: KernelFn<T>,
    c: &Coeffs<T>,
    mut piece: MixedTensorMut<'_, T>,
    rounding: Option<Rounding>,
) {
    let n = piece.param.len();
    let amsgrad = piece.state.max_exp_avg_sq.is_some();
    let momentum = piece.state.velocity.is_some();
    let mut bufs = [[T::ZERO; BLOCK]; 6];
    let mut start = 0;
    while start < n {
        let len = BLOCK.min(n - start);
        let [p, g, m, v, x, u] = &mut bufs;
        let (p, g, m, v) = (&mut p[..len], &mut g[..len], &mut m[..len], &mut v[..len]);
        let x = &mut x[..if amsgrad { len } else { 0 }];
        let u = &mut u[..if momentum { len } else { 0 }];
        let state = &mut piece.state;
        // A master copy is stored as T (checked before the step): stepped in place.
        let param: &mut [T] = match &mut piece.master_param {
            Some(StoredMut::Native(master)) => &mut master[start..start + len],
            _ => {
                load(&piece.param, start, p);
                p
            }
        };
        load_grad(&piece.grad, start, g);
        load(&state.exp_avg, start, m);
        load(&state.exp_avg_sq, start, v);
        if let Some(b) = &state.max_exp_avg_sq {
            load(b, start, x);
        }
        if let Some(b) = &state.velocity {
            load(b, start, u);
        }
        kernel(
            c,
            Slices {
                param: &mut *param,
                grad: g,
                exp_avg: m,
                exp_avg_sq: v,
                max_exp_avg_sq: x,
                velocity: u,
            },
        );
        match (rounding, T::as_f32(param), &mut piece.param) {
            (Some(r), Some(x), StoredMut::Bf16(p)) => round_checked(
                r.level,
                r.key,
                r.first + start as u64,
                x,
                &mut p[start..][..len],
            ),
            (Some(r), Some(x), StoredMut::F16(p)) => round_checked(
                r.level,
                r.key,
                r.first + start as u64,
                x,
                &mut p[start..][..len],
            ),
            _ => store(param, &mut piece.param, start),
        }
        store(m, &mut state.exp_avg, start);
        store(v, &mut state.exp_avg_sq, start);
        if let Some(b) = &mut state.max_exp_avg_sq {
            store(x, b, start);
        }
        if let Some(b) = &mut state.velocity {
            store(u, b, start);
        }
        start += len;
    }
}
