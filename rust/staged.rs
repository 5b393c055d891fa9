//! Pieces the fused kernel cannot read in place: a 16-bit param, a master
//! copy, 16-bit state of a compute type with no in-loop conversions, or 8-bit
//! state beside any of those.
//!
//! The kernel only sees the compute type. Such a piece is processed in blocks
//! of [`BLOCK`] elements: each buffer of a block is widened into a buffer on
//! the stack (native ones are copied too: simpler, and cheap next to the
//! conversions), stepped, and rounded back to nearest even. Rounding is exact
//! IEEE, so the result does not depend on the SIMD level. A 16-bit param
//! may instead be rounded stochastically, from a counter-based hash of its
//! element's place, which no SIMD level or thread count changes either. 8-bit
//! state is decoded and encoded a block at a time by `quant`'s codec (whose
//! bits are the same on every level); the staged block is its block.

use crate::element::Float;
use crate::kernel::{flags, Coeffs, Slices};
use crate::quant::stochastic::round_checked;
use crate::quant::{decode, encode, Codebook, StochasticKey, SIGNED, UNSIGNED};
use crate::simd::{KernelFn, SimdLevel};
use crate::storage::{load_grad, StoredMut, Q8_BLOCK};
use crate::tensor::{Buffer, MixedTensorMut};

/// Stochastic rounding of a piece's 16-bit param: the tensor's key, and the
/// index in the tensor of the piece's first element.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Rounding {
    pub(crate) key: StochasticKey,
    pub(crate) first: u64,
}

/// Elements per staged block: six buffers of this size fit in L1. It is the
/// 8-bit state's block, so a staged block decodes and encodes whole ones.
pub(crate) const BLOCK: usize = Q8_BLOCK;

/// The dynamic map a state buffer's 8-bit codes are of: signed for the
/// buffers of any sign, unsigned for the non-negative ones.
pub(crate) fn codebook(buffer: Buffer) -> &'static Codebook {
    match buffer {
        Buffer::ExpAvgSq | Buffer::MaxExpAvgSq => &UNSIGNED,
        _ => &SIGNED,
    }
}

/// Widen (or decode) `src[start..start + dst.len()]` into `dst`; `start` is a
/// multiple of [`BLOCK`].
fn load<T: Float>(
    level: SimdLevel,
    buffer: Buffer,
    src: &StoredMut<'_, T>,
    start: usize,
    dst: &mut [T],
) {
    let StoredMut::Q8 { codes, absmax } = src else {
        return crate::storage::load(src, start, dst);
    };
    let (len, b) = (dst.len(), start / BLOCK);
    if len == 0 {
        return; // a buffer that is off
    }
    let mut wide = [0f32; BLOCK];
    let out = T::as_f32_mut(dst).unwrap_or(&mut wide[..len]);
    // The lengths are the checked tensor's, so this cannot fail.
    let _ = decode(
        level,
        codebook(buffer),
        &codes[start..start + len],
        &absmax[b..=b],
        out,
    );
    if T::as_f32(dst).is_none() {
        for (d, &w) in dst.iter_mut().zip(&wide[..len]) {
            *d = T::from_f64(f64::from(w));
        }
    }
}

/// Round (or encode) `src` back into `dst[start..]`; `start` is a multiple of [`BLOCK`].
fn store<T: Float>(
    level: SimdLevel,
    buffer: Buffer,
    src: &[T],
    dst: &mut StoredMut<'_, T>,
    start: usize,
) {
    let StoredMut::Q8 { codes, absmax } = dst else {
        return crate::storage::store(src, dst, start);
    };
    let (len, b) = (src.len(), start / BLOCK);
    if len == 0 {
        return;
    }
    let mut narrow = [0f32; BLOCK];
    let x = match T::as_f32(src) {
        Some(x) => x,
        None => {
            for (n, &s) in narrow.iter_mut().zip(src) {
                *n = s.to_f64() as f32;
            }
            &narrow[..len]
        }
    };
    let _ = encode(
        level,
        codebook(buffer),
        x,
        &mut codes[start..start + len],
        &mut absmax[b..=b],
    );
}

/// Run `kernel` over a piece, a block at a time. With a master copy, the
/// master is what the kernel updates and the param receives it rounded.
/// With `rounding`, a 16-bit param (computed in f32, no master copy: checked
/// by the step) is stored rounded stochastically instead of to nearest.
pub(crate) fn run_staged<T: Float>(
    level: SimdLevel,
    kernel: KernelFn<T>,
    c: &Coeffs<T>,
    mut piece: MixedTensorMut<'_, T>,
    rounding: Option<Rounding>,
) {
    let n = piece.param.len();
    // Only the buffers the variant uses (an unused 8-bit one is not re-encoded).
    let amsgrad = c.variant & flags::AMSGRAD != 0 && piece.state.max_exp_avg_sq.is_some();
    let momentum = c.variant & flags::MOMENTUM != 0 && piece.state.velocity.is_some();
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
                load(level, Buffer::Param, &piece.param, start, p);
                p
            }
        };
        load_grad(&piece.grad, start, g);
        load(level, Buffer::ExpAvg, &state.exp_avg, start, m);
        load(level, Buffer::ExpAvgSq, &state.exp_avg_sq, start, v);
        if let (true, Some(b)) = (amsgrad, &state.max_exp_avg_sq) {
            load(level, Buffer::MaxExpAvgSq, b, start, x);
        }
        if let (true, Some(b)) = (momentum, &state.velocity) {
            load(level, Buffer::Velocity, b, start, u);
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
            (Some(r), Some(x), StoredMut::Bf16(p)) => {
                let first = r.first + start as u64;
                round_checked(level, r.key, first, x, &mut p[start..][..len])
            }
            (Some(r), Some(x), StoredMut::F16(p)) => {
                let first = r.first + start as u64;
                round_checked(level, r.key, first, x, &mut p[start..][..len])
            }
            _ => store(level, Buffer::Param, param, &mut piece.param, start),
        }
        store(level, Buffer::ExpAvg, m, &mut state.exp_avg, start);
        store(level, Buffer::ExpAvgSq, v, &mut state.exp_avg_sq, start);
        if let (true, Some(b)) = (amsgrad, &mut state.max_exp_avg_sq) {
            store(level, Buffer::MaxExpAvgSq, x, b, start);
        }
        if let (true, Some(b)) = (momentum, &mut state.velocity) {
            store(level, Buffer::Velocity, u, b, start);
        }
        start += len;
    }
}
