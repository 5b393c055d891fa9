//! The non-finite guard: does any gradient hold NaN or Inf?
//!
//! One read of the gradients, before anything is written, so a step can be
//! skipped whole (the loss-scaling recipe of mixed-precision training).

use rayon::prelude::*;

use crate::element::Float;
use crate::multi::{CHUNK, SERIAL_MAX};
use crate::storage::Stored;

/// Count of non-finite elements: an integer sum, which vectorizes (unlike a
/// short-circuiting `all`).
fn count_nonfinite<T: Float>(x: &[T]) -> usize {
    x.iter().map(|v| !v.is_finite() as usize).sum()
}

fn count_stored<T: Float>(x: Stored<'_, T>) -> usize {
    match x {
        Stored::Native(s) => count_nonfinite(s),
        Stored::Bf16(s) => s.iter().map(|v| !v.is_finite() as usize).sum(),
        Stored::F16(s) => s.iter().map(|v| !v.is_finite() as usize).sum(),
    }
}

/// Whether every element of every slice is finite.
pub fn all_finite<T: Float>(slices: &[&[T]]) -> bool {
    let stored: Vec<Stored<'_, T>> = slices.iter().map(|s| Stored::Native(s)).collect();
    all_finite_stored(&stored)
}

/// [`all_finite`] over buffers that may be stored in 16 bits.
pub fn all_finite_stored<T: Float>(grads: &[Stored<'_, T>]) -> bool {
    let total: usize = grads.iter().map(|s| s.len()).sum();
    if total <= SERIAL_MAX {
        return grads.iter().all(|&s| count_stored(s) == 0);
    }
    grads.par_iter().all(|&s| {
        (0..s.len().div_ceil(CHUNK)).into_par_iter().all(|i| {
            let (_, rest) = s.split_at(i * CHUNK);
            let (block, _) = rest.split_at(CHUNK.min(rest.len()));
            count_stored(block) == 0
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_nan_and_inf_anywhere() {
        for bad in [f32::NAN, f32::INFINITY, f32::NEG_INFINITY] {
            for at in [0, 7, 999, CHUNK * 3 + 1] {
                let mut g = vec![1.0f32; CHUNK * 4];
                let h = [2.0f32; 10];
                assert!(all_finite(&[&g[..], &h[..]]));
                g[at] = bad;
                assert!(!all_finite(&[&h[..], &g[..]]), "{bad} at {at}");
                assert!(!all_finite(&[&g[..at + 1]]));
            }
        }
        assert!(all_finite::<f64>(&[]));
        assert!(all_finite(&[&[f64::MAX, f64::MIN_POSITIVE, -0.0][..]]));
    }
}
