//! The floating-point element types the kernels run on: the bottom of the
//! crate's stack (it imports nothing from the crate).

use std::ops::{Add, Div, Mul, Neg, Sub};

use half::{bf16, f16, slice::HalfFloatSliceExt};

/// An IEEE float the Adam kernels are compiled for (`f32`, `f64`).
///
/// Every operation used by the kernels is a single correctly rounded IEEE operation
/// (`mul_add` is a fused multiply-add, `sqrt` the IEEE square root), so the scalar
/// path and every SIMD path give the same bits.
pub trait Float:
    Copy
    + Send
    + Sync
    + PartialOrd
    + Add<Output = Self>
    + Sub<Output = Self>
    + Mul<Output = Self>
    + Div<Output = Self>
    + Neg<Output = Self>
    + std::fmt::Debug
    + 'static
{
    /// Zero.
    const ZERO: Self;
    /// Name used in messages ("float32", "float64"), as NumPy spells it.
    const NAME: &'static str;
    /// Round a host-side `f64` scalar to this type (round to nearest even).
    fn from_f64(x: f64) -> Self;
    /// Widen to `f64` (exact).
    fn to_f64(self) -> f64;
    /// `self * a + b` with a single rounding.
    fn mul_add(self, a: Self, b: Self) -> Self;
    /// The correctly rounded square root.
    fn sqrt(self) -> Self;
    /// The absolute value.
    fn abs(self) -> Self;
    /// Neither infinite nor NaN.
    fn is_finite(self) -> bool;
    /// Widen bfloat16 values (exactly) into this type.
    fn widen_bf16(src: &[bf16], dst: &mut [Self]);
    /// Widen float16 values (exactly) into this type.
    fn widen_f16(src: &[f16], dst: &mut [Self]);
    /// Round into bfloat16, to nearest even.
    fn narrow_bf16(src: &[Self], dst: &mut [bf16]);
    /// Round into float16, to nearest even.
    fn narrow_f16(src: &[Self], dst: &mut [f16]);
    /// The slice as f32, when this type is f32 (the 8-bit state's fused step is f32 only).
    fn as_f32_mut(s: &mut [Self]) -> Option<&mut [f32]>;
    /// The slice as f32, when this type is f32 (stochastic rounding reads f32
    /// only: f64 values would be rounded twice).
    fn as_f32(s: &[Self]) -> Option<&[f32]>;
}

macro_rules! impl_float {
    ($t:ty, $name:literal, $to:ident, $from:ident, $as_f32:expr, $as_f32_mut:expr) => {
        impl Float for $t {
            const ZERO: Self = 0.0;
            const NAME: &'static str = $name;
            #[inline(always)]
            fn from_f64(x: f64) -> Self {
                x as $t
            }
            #[inline(always)]
            fn to_f64(self) -> f64 {
                self as f64
            }
            #[inline(always)]
            fn mul_add(self, a: Self, b: Self) -> Self {
                <$t>::mul_add(self, a, b)
            }
            #[inline(always)]
            fn sqrt(self) -> Self {
                <$t>::sqrt(self)
            }
            #[inline(always)]
            fn abs(self) -> Self {
                <$t>::abs(self)
            }
            #[inline(always)]
            fn is_finite(self) -> bool {
                <$t>::is_finite(self)
            }
            fn widen_bf16(src: &[bf16], dst: &mut [Self]) {
                src.$to(dst)
            }
            fn widen_f16(src: &[f16], dst: &mut [Self]) {
                src.$to(dst)
            }
            fn narrow_bf16(src: &[Self], dst: &mut [bf16]) {
                dst.$from(src)
            }
            fn narrow_f16(src: &[Self], dst: &mut [f16]) {
                dst.$from(src)
            }
            fn as_f32_mut(s: &mut [Self]) -> Option<&mut [f32]> {
                $as_f32_mut(s)
            }
            fn as_f32(s: &[Self]) -> Option<&[f32]> {
                $as_f32(s)
            }
        }
    };
}

impl_float!(
    f32,
    "float32",
    convert_to_f32_slice,
    convert_from_f32_slice,
    Some,
    Some
);
impl_float!(
    f64,
    "float64",
    convert_to_f64_slice,
    convert_from_f64_slice,
    |_| None,
    |_| None
);
