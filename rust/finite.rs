//! The non-finite guard: does any gradient hold NaN or Inf?
//!
//! One read of the gradients, before anything is written, so a step can be
//! skipped whole (the loss-scaling recipe of mixed-precision training). The
//! check is `x - x`, which is 0 for a finite x and NaN otherwise, summed over
//! sixteen lanes, compiled per SIMD level like the kernel.

// TODO(lints): cleaned on branch codec/unify
#![allow(unsafe_op_in_unsafe_fn, clippy::undocumented_unsafe_blocks)]

use half::{bf16, f16};
use std::sync::atomic::{AtomicBool, Ordering};

use crate::element::Float;
use crate::multi::SERIAL_MAX;
use crate::simd::SimdLevel;
use crate::storage::{Split, Stored};
use crate::team::Team;

/// Elements per parallel task of the check: long runs, so the four streams
/// of each task run at full speed (a read-only pass has no cache to respect).
const CHECK_BLOCK: usize = 1 << 20;

#[inline(always)]
#[allow(clippy::eq_op)] // `v - v` is the test: 0 when finite, NaN otherwise
fn finite_body<T: Float>(x: &[T]) -> bool {
    // Four quarters read side by side: four memory streams keep more misses
    // in flight than one (a single stream reads at about half the speed here).
    let quarter = x.len() / 4 / 16 * 16;
    let (a, rest) = x.split_at(quarter);
    let (b, rest) = rest.split_at(quarter);
    let (c, rest) = rest.split_at(quarter);
    let (d, tail) = rest.split_at(quarter);
    let mut acc = [T::ZERO; 16];
    for (((a, b), c), d) in a
        .chunks_exact(16)
        .zip(b.chunks_exact(16))
        .zip(c.chunks_exact(16))
        .zip(d.chunks_exact(16))
    {
        for i in 0..16 {
            acc[i] = acc[i] + (a[i] - a[i]) + (b[i] - b[i]) + (c[i] - c[i]) + (d[i] - d[i]);
        }
    }
    let total = tail.iter().fold(T::ZERO, |t, &v| t + (v - v));
    acc.into_iter().fold(total, |t, a| t + a) == T::ZERO
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn finite_avx512<T: Float>(x: &[T]) -> bool {
    finite_body(x)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn finite_avx2<T: Float>(x: &[T]) -> bool {
    finite_body(x)
}

fn slice_finite<T: Float>(x: &[T]) -> bool {
    match SimdLevel::detect() {
        // SAFETY: `detect` only returns levels this CPU supports.
        #[cfg(target_arch = "x86_64")]
        SimdLevel::Avx512 => unsafe { finite_avx512(x) },
        #[cfg(target_arch = "x86_64")]
        SimdLevel::Avx2 => unsafe { finite_avx2(x) },
        _ => finite_body(x),
    }
}

/// 16-bit formats: finite unless the exponent bits are all ones.
fn bits_finite(x: impl Iterator<Item = u16>, exponent: u16) -> bool {
    x.fold(0u16, |any, b| any | ((b & exponent == exponent) as u16)) == 0
}

fn stored_finite<T: Float>(x: Stored<'_, T>) -> bool {
    match x {
        Stored::Native(s) => slice_finite(s),
        Stored::Bf16(s) => bits_finite(s.iter().map(|v: &bf16| v.to_bits()), 0x7f80),
        Stored::F16(s) => bits_finite(s.iter().map(|v: &f16| v.to_bits()), 0x7c00),
    }
}

/// Whether every element of every slice is finite.
pub fn all_finite<T: Float>(slices: &[&[T]]) -> bool {
    let stored: Vec<Stored<'_, T>> = slices.iter().map(|s| Stored::Native(s)).collect();
    all_finite_stored(&stored)
}

/// [`all_finite`] over buffers that may be stored in 16 bits; large ones are
/// checked in blocks on the step's threads.
pub fn all_finite_stored<T: Float>(grads: &[Stored<'_, T>]) -> bool {
    let total: usize = grads.iter().map(|s| s.len()).sum();
    if total <= SERIAL_MAX {
        return grads.iter().all(|&s| stored_finite(s));
    }
    // Blocks of every buffer, in order; a found NaN/Inf stops the rest.
    let blocks: Vec<Stored<'_, T>> = grads
        .iter()
        .flat_map(|&s| {
            (0..s.len().div_ceil(CHECK_BLOCK)).map(move |i| {
                let (_, rest) = s.split_at(i * CHECK_BLOCK);
                rest.split_at(CHECK_BLOCK.min(rest.len())).0
            })
        })
        .collect();
    let bad = AtomicBool::new(false);
    Team::current().for_each_shared(blocks.len(), |i| {
        if !bad.load(Ordering::Relaxed) && !stored_finite(blocks[i]) {
            bad.store(true, Ordering::Relaxed);
        }
    });
    !bad.into_inner()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_nan_and_inf_anywhere() {
        // Two blocks and a ragged tail; positions in each quarter, at the
        // quarter boundaries and in the tail the quarters leave over.
        let n = CHECK_BLOCK * 2 + 37;
        let q = CHECK_BLOCK / 4;
        for bad in [f32::NAN, f32::INFINITY, f32::NEG_INFINITY] {
            for at in [
                0,
                7,
                16,
                999,
                q - 1,
                q,
                3 * q + 5,
                CHECK_BLOCK + 1,
                n - 30,
                n - 1,
            ] {
                let mut g = vec![1.0f32; n];
                let h = [2.0f32; 10];
                assert!(all_finite(&[&g[..], &h[..]]));
                g[at] = bad;
                assert!(!all_finite(&[&h[..], &g[..]]), "{bad} at {at}");
                assert!(!all_finite(&[&g[..at + 1]]));
            }
        }
        assert!(all_finite::<f64>(&[]));
        assert!(all_finite(&[&[f64::MAX, f64::MIN_POSITIVE, -0.0][..]]));
        // Huge finite values do not overflow the check.
        assert!(all_finite(&[&vec![f32::MAX; 1000][..]]));
    }

    #[test]
    fn sixteen_bit_grads() {
        let mut g = vec![bf16::from_f32(1.0); 100];
        assert!(all_finite_stored::<f32>(&[Stored::Bf16(&g)]));
        g[50] = bf16::NAN;
        assert!(!all_finite_stored::<f32>(&[Stored::Bf16(&g)]));
        let mut h = vec![f16::MAX; 100];
        assert!(all_finite_stored::<f32>(&[Stored::F16(&h)]));
        h[99] = f16::NEG_INFINITY;
        assert!(!all_finite_stored::<f32>(&[Stored::F16(&h)]));
    }
}
