//! The fused Adam update over one contiguous piece of one tensor.
//!
//! One pass: param, grad, m, v (and AMSGrad's max) are each read once and
//! param, m, v written once. The body is written for the autovectorizer and
//! compiled once per SIMD level (see `simd.rs`); it uses only correctly
//! rounded IEEE operations, so every level gives the same bits.

use crate::element::Float;
use crate::scalars::Coeffs;

/// One Adam step over `param.len()` elements. `L2` and `AMS` select the
/// variant once per call, so the loop carries no per-element branch.
/// The caller guarantees equal lengths (`max_exp_avg_sq` may be empty when not `AMS`).
#[inline(always)]
pub(crate) fn adam_update<T: Float, const L2: bool, const AMS: bool>(
    c: &Coeffs<T>,
    param: &mut [T],
    grad: &[T],
    exp_avg: &mut [T],
    exp_avg_sq: &mut [T],
    max_exp_avg_sq: &mut [T],
) {
    let n = param.len();
    // Re-slicing to `n` lets the compiler drop the bounds checks and vectorize.
    let grad = &grad[..n];
    let exp_avg = &mut exp_avg[..n];
    let exp_avg_sq = &mut exp_avg_sq[..n];
    let max_exp_avg_sq = &mut max_exp_avg_sq[..if AMS { n } else { 0 }];
    for i in 0..n {
        let mut p = param[i];
        let mut g = grad[i] * c.sign;
        if L2 {
            g = c.l2.mul_add(p, g);
        }
        p = p * c.decay;
        // m.lerp(g, 1 - beta1), as torch computes it.
        let m = c.one_minus_beta1.mul_add(g - exp_avg[i], exp_avg[i]);
        let v = c.beta2.mul_add(exp_avg_sq[i], c.one_minus_beta2 * g * g);
        exp_avg[i] = m;
        exp_avg_sq[i] = v;
        let v_used = if AMS {
            let old = max_exp_avg_sq[i];
            let max = if v > old { v } else { old };
            max_exp_avg_sq[i] = max;
            max
        } else {
            v
        };
        let denom = v_used.sqrt().mul_add(c.inv_bias_correction2_sqrt, c.eps);
        param[i] = (-c.step_size).mul_add(m / denom, p);
    }
}
