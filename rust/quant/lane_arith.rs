//! The element update's arithmetic ([`Arith`]) on the lanes of one SIMD
//! level: each operation is the [`Lanes`] method that does it in every lane,
//! so `kernel::step_element` runs a vector of elements at a time.

use std::marker::PhantomData;

use crate::arith::Arith;

use super::lanes::Lanes;

/// The token that `L`'s level runs here, and with it the [`Arith`] of `L`'s
/// lanes (and the few lane operations the 8-bit step adds). Zero-sized; made
/// only by the unsafe [`OnLevel::new`].
pub(super) struct OnLevel<L>(PhantomData<L>);

impl<L> Clone for OnLevel<L> {
    fn clone(&self) -> Self {
        *self
    }
}

impl<L> Copy for OnLevel<L> {}

impl<L: Lanes> OnLevel<L> {
    /// # Safety
    /// The CPU must support `L`'s level, and the token and its copies may
    /// only be used in code compiled for the level (as [`Job::run`]'s
    /// contract says of `L`: inlined into the frame [`Lanes::framed`] runs).
    ///
    /// [`Job::run`]: super::lanes::Job::run
    #[inline(always)]
    pub(super) unsafe fn new() -> Self {
        OnLevel(PhantomData)
    }

    /// `x` in every lane.
    #[inline(always)]
    pub(super) fn splat(self, x: f32) -> L::F {
        // SAFETY: `self` says this runs where `L`'s instructions may (`new`'s
        // contract); the method only computes.
        unsafe { L::splat(x) }
    }

    /// 0 in every lane, as bits.
    #[inline(always)]
    pub(super) fn zero_bits(self) -> L::U {
        // SAFETY: as in `splat`.
        unsafe { L::splat_u(0) }
    }

    /// `largest`, or the bits of `|x|` where those are larger, in each lane
    /// (a NaN's bits are above every number's).
    #[inline(always)]
    pub(super) fn max_magnitude_bits(self, largest: L::U, x: L::F) -> L::U {
        // SAFETY: as in `splat`.
        unsafe { L::max(largest, L::and(L::bits(x), L::splat_u(0x7fff_ffff))) }
    }

    /// The largest lane.
    #[inline(always)]
    pub(super) fn reduce_max(self, v: L::U) -> u32 {
        // SAFETY: as in `splat`.
        unsafe { L::reduce_max(v) }
    }
}

/// The [`Arith`] methods, each one call of a [`Lanes`] method.
macro_rules! lane_ops {
    ($($name:ident($($arg:ident),*) => $body:expr;)+) => {
        $(
            #[inline(always)]
            fn $name(self, $($arg: L::F),*) -> L::F {
                // SAFETY: `self` says this runs where `L`'s instructions may
                // (`OnLevel::new`'s contract); the method only computes.
                unsafe { $body }
            }
        )+
    };
}

impl<L: Lanes> Arith for OnLevel<L> {
    type V = L::F;
    lane_ops! {
        zero() => L::splat(0.0);
        add(a, b) => L::add(a, b);
        sub(a, b) => L::sub_f(a, b);
        mul(a, b) => L::mul(a, b);
        div(a, b) => L::div(a, b);
        fma(a, b, c) => L::fma(a, b, c);
        max(a, b) => L::max_f(a, b);
        min(a, b) => L::min_f(a, b);
        abs(a) => L::from_bits(L::and(L::bits(a), L::splat_u(0x7fff_ffff)));
        sqrt(a) => L::sqrt(a);
        neg(a) => L::from_bits(L::xor(L::bits(a), L::splat_u(0x8000_0000)));
        where_positive(a, x) => L::where_positive(a, x);
    }
}
