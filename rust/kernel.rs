//! The fused update over one contiguous piece of one tensor, with the
//! coefficients it reads and the flags that choose its variant.
//!
//! The update of one element, [`step_element`], is written once, in the
//! operations of [`Arith`]: the float kernel's loop ([`update`]) runs it on
//! plain values, and the fused 8-bit block step (`quant/fused.rs`) on SIMD
//! lanes, between decoding and encoding its moments.
//!
//! One pass: param, grad and every state buffer are each read once and
//! written once. The loop is written for the autovectorizer and compiled once
//! per SIMD level (see `simd.rs`); it uses only correctly rounded IEEE
//! operations, so every level gives the same bits. The GPU kernel
//! (`shaders/adam.wgsl`) does the same operations in the same order, from the
//! same coefficients: its `Step` uniform starts with [`Coeffs::NAMES`].

use crate::arith::{Arith, Plain};
use crate::convert::Store;
use crate::element::Float;

/// The kernel variants: bits of the const parameter `F` of [`step_element`], fixed
/// once per call so the loop carries no per-element branch on options.
pub mod flags {
    /// L2 weight decay added to the gradient.
    pub const L2: u32 = 1;
    /// AMSGrad: the running max of v in the denominator.
    pub const AMSGRAD: u32 = 2;
    /// downhill's velocity on top of the step.
    pub const MOMENTUM: u32 = 4;
    /// The rule, two bits: Adam (0), AdaMax's infinity norm instead of sqrt(v),
    /// NAdam's extra gradient term, or RAdam's un-adapted `m`.
    pub const RULE: u32 = 24;
    pub const ADAMAX: u32 = 8;
    pub const NADAM: u32 = 16;
    pub const UNADAPTED: u32 = 24;
    /// The rule's code in `RULE`'s bits, as the WGSL kernel's `RULE` override numbers it.
    pub const fn rule_code(variant: u32) -> u32 {
        (variant & RULE) >> 3
    }
}

/// Calls `$callback!(args.., variants..)` with every kernel variant that
/// `StepScalars::coeffs` builds (AMSGrad goes with the Adam rule only): the
/// one list of them, for the SIMD dispatch and the 8-bit fused step.
macro_rules! with_variants {
    ($callback:ident!($($args:tt)*)) => {{
        use $crate::kernel::flags::{ADAMAX, AMSGRAD as A, L2, MOMENTUM as M, NADAM, UNADAPTED};
        $callback!(
            $($args)*
            0,
            L2,
            M,
            L2 | M,
            A,
            A | L2,
            A | M,
            A | L2 | M,
            ADAMAX,
            ADAMAX | L2,
            ADAMAX | M,
            ADAMAX | L2 | M,
            NADAM,
            NADAM | L2,
            NADAM | M,
            NADAM | L2 | M,
            UNADAPTED,
            UNADAPTED | L2,
            UNADAPTED | M,
            UNADAPTED | L2 | M
        )
    }};
}
pub(crate) use with_variants;

/// Declares [`Coeffs`] from one list of its fields, and the list of their
/// names in that order (the order of the WGSL `Step` struct).
macro_rules! coefficients {
    ($($(#[doc = $doc:literal])* $field:ident,)+) => {
        /// The per-step scalars rounded to the element type: what the kernel reads
        /// (made by [`crate::StepScalars`]).
        #[derive(Clone, Copy, Debug, PartialEq)]
        pub struct Coeffs<T> {
            $($(#[doc = $doc])* pub $field: T,)+
            /// The kernel variant: a set of [`flags`].
            pub variant: u32,
        }

        /// How many scalars [`Coeffs`] holds.
        pub const COEFFS: usize = [$(stringify!($field)),+].len();

        impl<T: Copy> Coeffs<T> {
            /// The scalars' names, in the order of [`Coeffs::values`].
            pub const NAMES: [&'static str; COEFFS] = [$(stringify!($field)),+];

            /// The scalars, in the order of [`Coeffs::NAMES`].
            pub fn values(&self) -> [T; COEFFS] {
                [$(self.$field),+]
            }

            /// Each scalar mapped through `f`, the variant kept (the 8-bit
            /// step splats them into SIMD lanes).
            #[inline(always)]
            pub(crate) fn map<U>(&self, mut f: impl FnMut(T) -> U) -> Coeffs<U> {
                Coeffs {
                    $($field: f(self.$field),)+
                    variant: self.variant,
                }
            }
        }
    };
}

coefficients! {
    /// The multiple of the direction `m / denom` (see [`crate::StepScalars`]).
    step_size,
    /// The multiple of `sqrt(v)` in the denominator.
    inv_bias_correction2_sqrt,
    /// The gradient's weight in the first moment's lerp.
    one_minus_beta1,
    /// The second moment's decay.
    beta2,
    /// The squared gradient's weight in the second moment.
    one_minus_beta2,
    /// Added to the denominator.
    eps,
    /// L2 coefficient added to the gradient (flag `L2`).
    l2,
    /// The decoupled decay factor the param is multiplied by.
    decay,
    /// -1 to maximize (an exact multiplication) times the norm-clipping factor
    /// over the loss scale.
    grad_mul,
    /// Raw gradients are clamped to +-clip (infinite when clipping is off).
    clip,
    /// NAdam's multiple of `g / denom` (flag `NADAM`).
    nadam_grad,
    /// The velocity's keep factor (flag `MOMENTUM`).
    momentum_keep,
    /// The velocity's multiple of the step (flag `MOMENTUM`).
    momentum_step,
}

/// The buffers of one piece, all of one length (`max_exp_avg_sq` and
/// `velocity` are empty when their variant is off). The state is stored as
/// `S`: the compute type itself, or a 16-bit type converted in the loop.
pub struct Slices<'a, T, S = T> {
    pub param: &'a mut [T],
    pub grad: &'a [T],
    pub exp_avg: &'a mut [S],
    /// v for Adam, u (the infinity norm) for AdaMax.
    pub exp_avg_sq: &'a mut [S],
    pub max_exp_avg_sq: &'a mut [S],
    pub velocity: &'a mut [S],
}

/// The update of one element with variant `F` (a set of [`flags`]) in
/// arithmetic `a`: from its gradient and its `[param, exp_avg, exp_avg_sq,
/// max_exp_avg_sq, velocity]`, their new values (a buffer the variant does
/// not use comes back as it went in).
#[inline(always)]
pub(crate) fn step_element<A: Arith, const F: u32>(
    a: A,
    c: &Coeffs<A::V>,
    grad: A::V,
    old: [A::V; 5],
) -> [A::V; 5] {
    let on = |flag: u32| F & flag != 0;
    let rule = F & flags::RULE;
    let [mut p, m_old, v_old, x_old, u_old] = old;
    // Clamp (a no-op with an infinite limit, NaN kept), then unscale, sign and norm-clip.
    let mut g = a.max(a.neg(c.clip), grad);
    g = a.min(c.clip, g);
    g = a.mul(g, c.grad_mul);
    if on(flags::L2) {
        g = a.fma(c.l2, p, g);
    }
    p = a.mul(p, c.decay);
    // m.lerp(g, 1 - beta1), as torch computes it.
    let m = a.fma(c.one_minus_beta1, a.sub(g, m_old), m_old);
    // NAdam's gradient term, part of the step (0 for the other rules).
    let mut extra = a.zero();
    let mut x = x_old;
    let (v, direction);
    if rule == flags::ADAMAX {
        // AdaMax's infinity norm u, kept where Adam keeps v.
        v = a.max(a.mul(c.beta2, v_old), a.add(a.abs(g), c.eps));
        // u == 0 only where every gradient so far was 0, so m is 0 too.
        direction = a.where_positive(v, a.div(m, v));
    } else {
        v = a.fma(c.beta2, v_old, a.mul(a.mul(c.one_minus_beta2, g), g));
        direction = if rule == flags::UNADAPTED {
            m
        } else {
            let v_used = if on(flags::AMSGRAD) {
                x = a.max(v, x_old);
                x
            } else {
                v
            };
            let denom = a.fma(a.sqrt(v_used), c.inv_bias_correction2_sqrt, c.eps);
            if rule == flags::NADAM {
                extra = a.mul(c.nadam_grad, a.div(g, denom));
            }
            a.div(m, denom)
        };
    }
    let mut u = u_old;
    if on(flags::MOMENTUM) {
        let delta = a.fma(c.step_size, direction, extra);
        u = a.fma(c.momentum_keep, u_old, a.neg(a.mul(c.momentum_step, delta)));
        p = a.add(p, u);
    } else {
        if rule == flags::NADAM {
            // Applied before the first-moment term, as torch does.
            p = a.sub(p, extra);
        }
        p = a.fma(a.neg(c.step_size), direction, p);
    }
    [p, m, v, x, u]
}

/// One step over `s.param.len()` elements with variant `F` (a set of [`flags`]).
#[inline(always)]
pub(crate) fn update<T: Float, S: Store<T>, const F: u32>(c: &Coeffs<T>, s: Slices<'_, T, S>) {
    let amsgrad = F & flags::AMSGRAD != 0;
    let momentum = F & flags::MOMENTUM != 0;
    let n = s.param.len();
    let param = s.param;
    // Re-slicing to `n` lets the compiler drop the bounds checks and vectorize.
    let grad = &s.grad[..n];
    let exp_avg = &mut s.exp_avg[..n];
    let exp_avg_sq = &mut s.exp_avg_sq[..n];
    let max_exp_avg_sq = &mut s.max_exp_avg_sq[..if amsgrad { n } else { 0 }];
    let velocity = &mut s.velocity[..if momentum { n } else { 0 }];
    for i in 0..n {
        let old = [
            param[i],
            exp_avg[i].load(),
            exp_avg_sq[i].load(),
            if amsgrad {
                max_exp_avg_sq[i].load()
            } else {
                T::ZERO
            },
            if momentum {
                velocity[i].load()
            } else {
                T::ZERO
            },
        ];
        let [p, m, v, x, u] = step_element::<_, F>(Plain::new(), c, grad[i], old);
        param[i] = p;
        exp_avg[i] = S::store(m);
        exp_avg_sq[i] = S::store(v);
        if amsgrad {
            max_exp_avg_sq[i] = S::store(x);
        }
        if momentum {
            velocity[i] = S::store(u);
        }
    }
}
