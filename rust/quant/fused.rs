//! The fused 8-bit step over one block, in registers: each vector of the
//! block decodes its moments, runs the element update, stores the param and
//! keeps the new moments (in an L1 buffer, for the encoder) with their
//! running absmax; then each moment is encoded from that buffer.
//!
//! The update is `kernel::update` again, written in [`Lanes`] operations: the
//! same correctly rounded IEEE operations in the same order (the kernel's
//! `max`, its clamp and `mul_add` are `max_f`, `min_f` and `fma` here), so
//! it gives the float32 kernel's bits on every level; the tests hold the
//! fused step against the float32 kernel run on decoded state.

// TODO(lints): cleaned on branch codec/unify
#![allow(unsafe_op_in_unsafe_fn, clippy::undocumented_unsafe_blocks)]

use crate::kernel::{flags, Coeffs};

use super::codec::{encode_block, Codebook, BLOCK, SIGNED, UNSIGNED};
use super::lanes::{Lanes, Scalar};

/// The coefficients of one step, in every lane.
pub(super) struct Splat<L: Lanes> {
    clip: L::F,
    neg_clip: L::F,
    grad_mul: L::F,
    l2: L::F,
    decay: L::F,
    one_minus_beta1: L::F,
    beta2: L::F,
    one_minus_beta2: L::F,
    eps: L::F,
    inv_bias_correction2_sqrt: L::F,
    nadam_grad: L::F,
    step_size: L::F,
    neg_step_size: L::F,
    momentum_keep: L::F,
    momentum_step: L::F,
}

impl<L: Lanes> Splat<L> {
    /// # Safety
    /// `L`'s level must be enabled.
    #[inline(always)]
    pub(super) unsafe fn new(c: &Coeffs<f32>) -> Self {
        Splat {
            clip: L::splat(c.clip),
            neg_clip: L::splat(-c.clip),
            grad_mul: L::splat(c.grad_mul),
            l2: L::splat(c.l2),
            decay: L::splat(c.decay),
            one_minus_beta1: L::splat(c.one_minus_beta1),
            beta2: L::splat(c.beta2),
            one_minus_beta2: L::splat(c.one_minus_beta2),
            eps: L::splat(c.eps),
            inv_bias_correction2_sqrt: L::splat(c.inv_bias_correction2_sqrt),
            nadam_grad: L::splat(c.nadam_grad),
            step_size: L::splat(c.step_size),
            neg_step_size: L::splat(-c.step_size),
            momentum_keep: L::splat(c.momentum_keep),
            momentum_step: L::splat(c.momentum_step),
        }
    }
}

/// A lane group's param and state: `[param, exp_avg, exp_avg_sq, max_exp_avg_sq, velocity]`.
type Group<L> = [<L as Lanes>::F; 5];

/// `kernel::update`'s element step for variant `F`, operation for operation.
#[inline(always)]
unsafe fn update<L: Lanes, const F: u32>(c: &Splat<L>, grad: L::F, old: Group<L>) -> Group<L> {
    let on = |flag: u32| F & flag != 0;
    let rule = F & flags::RULE;
    let [mut p, m_old, v_old, x_old, u_old] = old;
    let mut g = L::max_f(c.neg_clip, grad);
    g = L::min_f(c.clip, g);
    g = L::mul(g, c.grad_mul);
    if on(flags::L2) {
        g = L::fma(c.l2, p, g);
    }
    p = L::mul(p, c.decay);
    let m = L::fma(c.one_minus_beta1, L::sub_f(g, m_old), m_old);
    let mut extra = L::splat(0.0);
    let mut x = x_old;
    let (v, direction);
    if rule == flags::ADAMAX {
        let abs_g = L::from_bits(L::and(L::bits(g), L::splat_u(0x7fff_ffff)));
        v = L::max_f(L::mul(c.beta2, v_old), L::add(abs_g, c.eps));
        direction = L::where_positive(v, L::div(m, v));
    } else {
        v = L::fma(c.beta2, v_old, L::mul(L::mul(c.one_minus_beta2, g), g));
        direction = if rule == flags::UNADAPTED {
            m
        } else {
            let v_used = if on(flags::AMSGRAD) {
                x = L::max_f(v, x_old);
                x
            } else {
                v
            };
            let denom = L::fma(L::sqrt(v_used), c.inv_bias_correction2_sqrt, c.eps);
            if rule == flags::NADAM {
                extra = L::mul(c.nadam_grad, L::div(g, denom));
            }
            L::div(m, denom)
        };
    }
    let mut u = u_old;
    if on(flags::MOMENTUM) {
        let delta = L::fma(c.step_size, direction, extra);
        let neg = L::bits(L::mul(c.momentum_step, delta));
        let neg = L::from_bits(L::xor(neg, L::splat_u(0x8000_0000)));
        u = L::fma(c.momentum_keep, u_old, neg);
        p = L::add(p, u);
    } else {
        if rule == flags::NADAM {
            p = L::sub_f(p, extra);
        }
        p = L::fma(c.neg_step_size, direction, p);
    }
    [p, m, v, x, u]
}

/// One 8-bit state buffer of a block: its codes and its absmax.
pub(super) struct BlockState<'a> {
    pub codes: &'a mut [u8],
    pub absmax: &'a mut f32,
}

/// The maps of `[exp_avg, exp_avg_sq, max_exp_avg_sq, velocity]`: signed
/// for the first moment and the velocity, unsigned for the others.
const BOOKS: [&Codebook; 4] = [&SIGNED, &UNSIGNED, &UNSIGNED, &SIGNED];

/// Which of the four state buffers variant `F` uses.
pub(super) const fn used(variant: u32) -> [bool; 4] {
    [
        true,
        true,
        variant & flags::AMSGRAD != 0,
        variant & flags::MOMENTUM != 0,
    ]
}

/// Step one block (at most [`BLOCK`] elements) with variant `F`; `state`
/// holds the buffers `used(F)` names (the others are ignored); `new` is
/// room for the new moments.
///
/// # Safety
/// `L`'s level must be enabled; every buffer holds `param.len()` elements.
#[inline(always)]
pub(super) unsafe fn step_block<L: Lanes, const F: u32>(
    splat: &Splat<L>,
    scalar: &Splat<Scalar>,
    param: &mut [f32],
    grad: &[f32],
    state: &mut [Option<BlockState<'_>>; 4],
    new: &mut [[f32; BLOCK]; 4],
) {
    let use_ = used(F);
    let n = param.len();
    let mut largest = [L::splat_u(0); 4];
    let magnitude = L::splat_u(0x7fff_ffff);
    let mut scales = [0f32; 4];
    for k in 0..4 {
        if let Some(s) = &state[k] {
            scales[k] = *s.absmax;
        }
    }
    let mut i = 0;
    while i + L::N <= n {
        let mut old = [L::splat(0.0); 5];
        old[0] = L::load(param.as_ptr().add(i));
        for k in 0..4 {
            if use_[k] {
                if let Some(s) = &state[k] {
                    let v = L::lookup(BOOKS[k].values.as_ptr(), s.codes.as_ptr().add(i));
                    old[k + 1] = L::mul(v, L::splat(scales[k]));
                }
            }
        }
        let out = update::<L, F>(splat, L::load(grad.as_ptr().add(i)), old);
        L::store(param.as_mut_ptr().add(i), out[0]);
        for k in 0..4 {
            if use_[k] {
                L::store(new[k].as_mut_ptr().add(i), out[k + 1]);
                largest[k] = L::max(largest[k], L::and(L::bits(out[k + 1]), magnitude));
            }
        }
        i += L::N;
    }
    let mut largest_bits = [0u32; 4];
    for k in 0..4 {
        largest_bits[k] = L::reduce_max(largest[k]);
    }
    let mut largest = largest_bits;
    while i < n {
        let mut old = [0f32; 5];
        old[0] = param[i];
        for k in 0..4 {
            if use_[k] {
                if let Some(s) = &state[k] {
                    old[k + 1] = BOOKS[k].values[s.codes[i] as usize] * scales[k];
                }
            }
        }
        let out = update::<Scalar, F>(scalar, grad[i], old);
        param[i] = out[0];
        for k in 0..4 {
            if use_[k] {
                new[k][i] = out[k + 1];
                largest[k] = largest[k].max(out[k + 1].to_bits() & 0x7fff_ffff);
            }
        }
        i += 1;
    }
    for k in 0..4 {
        if use_[k] {
            if let Some(s) = &mut state[k] {
                *s.absmax = encode_block::<L>(BOOKS[k], &new[k][..n], largest[k], s.codes);
            }
        }
    }
}
