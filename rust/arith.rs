//! The arithmetic the element update is written in, over any value type: a
//! plain float here, a vector of lanes at each SIMD level in `quant`. The one
//! update (`kernel::step_element`) is generic over it, so the float kernel
//! and the fused 8-bit block step run the same operations in the same order.

use std::marker::PhantomData;

use crate::element::Float;

/// The operations of the element update on values of type [`Arith::V`].
///
/// Each is a single correctly rounded IEEE operation or exact (`neg`, `abs`,
/// `max`, `min`, `where_positive` only move or choose bits), so every
/// implementation gives the same bits. A value of the implementing type is a
/// token that the operations can run here (for SIMD lanes: that the CPU has
/// the level); it is zero-sized and costs nothing.
pub(crate) trait Arith: Copy {
    /// One value, or one vector of lanes.
    type V: Copy;
    /// Zero.
    fn zero(self) -> Self::V;
    fn add(self, a: Self::V, b: Self::V) -> Self::V;
    fn sub(self, a: Self::V, b: Self::V) -> Self::V;
    fn mul(self, a: Self::V, b: Self::V) -> Self::V;
    fn div(self, a: Self::V, b: Self::V) -> Self::V;
    /// `a * b + c`, rounded once.
    fn fma(self, a: Self::V, b: Self::V, c: Self::V) -> Self::V;
    /// `if a > b { a } else { b }`: `b` when either is NaN.
    fn max(self, a: Self::V, b: Self::V) -> Self::V;
    /// `if a < b { a } else { b }`: `b` when either is NaN.
    fn min(self, a: Self::V, b: Self::V) -> Self::V;
    /// The value with its sign bit cleared.
    fn abs(self, a: Self::V) -> Self::V;
    /// The correctly rounded square root.
    fn sqrt(self, a: Self::V) -> Self::V;
    /// The value with its sign bit flipped.
    fn neg(self, a: Self::V) -> Self::V;
    /// `x` where `a > 0`, else 0 (also where `a` is NaN).
    fn where_positive(self, a: Self::V, x: Self::V) -> Self::V;
}

/// The arithmetic of plain `T` values, one at a time (the float kernel's,
/// which the compiler vectorizes, and the 8-bit step's tails).
#[derive(Clone, Copy)]
pub(crate) struct Plain<T>(PhantomData<T>);

impl<T> Plain<T> {
    /// The token (plain arithmetic runs anywhere).
    pub(crate) const fn new() -> Self {
        Plain(PhantomData)
    }
}

impl<T: Float> Arith for Plain<T> {
    type V = T;
    #[inline(always)]
    fn zero(self) -> T {
        T::ZERO
    }
    #[inline(always)]
    fn add(self, a: T, b: T) -> T {
        a + b
    }
    #[inline(always)]
    fn sub(self, a: T, b: T) -> T {
        a - b
    }
    #[inline(always)]
    fn mul(self, a: T, b: T) -> T {
        a * b
    }
    #[inline(always)]
    fn div(self, a: T, b: T) -> T {
        a / b
    }
    #[inline(always)]
    fn fma(self, a: T, b: T, c: T) -> T {
        a.mul_add(b, c)
    }
    #[inline(always)]
    fn max(self, a: T, b: T) -> T {
        if a > b {
            a
        } else {
            b
        }
    }
    #[inline(always)]
    fn min(self, a: T, b: T) -> T {
        if a < b {
            a
        } else {
            b
        }
    }
    #[inline(always)]
    fn abs(self, a: T) -> T {
        a.abs()
    }
    #[inline(always)]
    fn sqrt(self, a: T) -> T {
        a.sqrt()
    }
    #[inline(always)]
    fn neg(self, a: T) -> T {
        -a
    }
    #[inline(always)]
    fn where_positive(self, a: T, x: T) -> T {
        if a > T::ZERO {
            x
        } else {
            T::ZERO
        }
    }
}
