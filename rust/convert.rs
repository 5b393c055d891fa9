//! Branch-free conversions between f32 and the 16-bit formats, written so the
//! autovectorizer turns them into a few integer and float vector operations
//! inside the kernel loop. Round to nearest even, exactly as IEEE (and F16C,
//! and the `half` crate) does; NaNs stay NaNs, made quiet. The tests compare
//! them with `half` on every 16-bit value and on the f32 rounding boundaries.

use half::{bf16, f16};

use crate::element::Float;

/// A type state may be stored as, read and written as the compute type `T`.
pub trait Store<T>: Copy + Send + Sync + 'static {
    /// The stored value as the compute type (exact).
    fn load(self) -> T;
    /// A compute-type value as stored (rounded to nearest even when narrower).
    fn store(x: T) -> Self;
}

impl<T: Float> Store<T> for T {
    #[inline(always)]
    fn load(self) -> T {
        self
    }
    #[inline(always)]
    fn store(x: T) -> T {
        x
    }
}

#[inline(always)]
fn select(c: bool, a: u32, b: u32) -> u32 {
    if c {
        a
    } else {
        b
    }
}

impl Store<f32> for bf16 {
    #[inline(always)]
    fn load(self) -> f32 {
        let b = (self.to_bits() as u32) << 16;
        // A NaN comes back quiet, as from `half` and F16C.
        f32::from_bits(select((b & 0x7fff_ffff) > 0x7f80_0000, b | 0x0040_0000, b))
    }
    #[inline(always)]
    fn store(x: f32) -> bf16 {
        let b = x.to_bits();
        // Adding 0x7fff plus the kept lowest bit rounds to nearest, ties to even.
        let rounded = b.wrapping_add(0x7fff + ((b >> 16) & 1)) >> 16;
        let quiet_nan = (b >> 16) | 0x40;
        bf16::from_bits(select((b & 0x7fff_ffff) > 0x7f80_0000, quiet_nan, rounded) as u16)
    }
}

impl Store<f32> for f16 {
    /// After F. Giesen's `half_to_float`: shift into place, rebias, and
    /// renormalize subnormals with one float subtraction.
    #[inline(always)]
    fn load(self) -> f32 {
        let h = self.to_bits() as u32;
        let shifted = (h & 0x7fff) << 13;
        let exp = shifted & (0x7c00 << 13);
        let normal = shifted + ((127 - 15) << 23);
        let inf_nan =
            (normal + ((128 - 16) << 23)) | select(shifted > (0x7c00 << 13), 0x0040_0000, 0);
        // Subnormal: 2^-14 * 0.mant, as (normal with exponent 2^-14 + 2^-14 implicit) - 2^-14.
        let sub = (f32::from_bits(normal + (1 << 23)) - f32::from_bits(113 << 23)).to_bits();
        let bits = select(exp == 0x7c00 << 13, inf_nan, select(exp == 0, sub, normal));
        f32::from_bits(bits | ((h & 0x8000) << 16))
    }

    /// After F. Giesen's `float_to_half_fast3_rtne`; NaNs keep their top
    /// payload bits and become quiet, as F16C does.
    #[inline(always)]
    fn store(x: f32) -> f16 {
        let b = x.to_bits();
        let sign = (b >> 16) & 0x8000;
        let a = b & 0x7fff_ffff;
        // Results below 2^-14 are subnormal: adding 0.5 lets the float adder round them.
        let denorm_magic = ((127 - 15) + (23 - 10) + 1) << 23;
        let sub = (f32::from_bits(a) + f32::from_bits(denorm_magic))
            .to_bits()
            .wrapping_sub(denorm_magic);
        let odd = (a >> 13) & 1;
        let normal = a.wrapping_add(((15 - 127) << 23) as u32 + 0xfff + odd) >> 13;
        let finite = select(a < 113 << 23, sub, normal);
        let big = select(a > 0x7f80_0000, 0x7e00 | ((a >> 13) & 0x3ff), 0x7c00);
        f16::from_bits((select(a >= (127 + 16) << 23, big, finite) | sign) as u16)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn f32_samples() -> Vec<f32> {
        let mut out = Vec::new();
        // Every f16 and bf16 value, the midpoints between neighbours, and a nudge either side.
        for h in 0..=u16::MAX {
            for v in [f16::from_bits(h).to_f32(), bf16::from_bits(h).to_f32()] {
                let b = v.to_bits();
                out.extend([
                    v,
                    f32::from_bits(b.wrapping_add(1)),
                    f32::from_bits(b.wrapping_sub(1)),
                ]);
            }
            let (a, b) = (
                f16::from_bits(h).to_f32(),
                f16::from_bits(h.wrapping_add(1)).to_f32(),
            );
            let mid = (a as f64 + b as f64) / 2.0;
            out.extend([mid as f32, f32::from_bits((mid as f32).to_bits() + 1)]);
            let (a, b) = (
                bf16::from_bits(h).to_f32(),
                bf16::from_bits(h.wrapping_add(1)).to_f32(),
            );
            out.push(((a as f64 + b as f64) / 2.0) as f32);
        }
        // And a sweep over every exponent with assorted mantissas.
        for bits in (0..=u32::MAX).step_by(65_521) {
            out.push(f32::from_bits(bits));
        }
        out
    }

    fn same(a: u16, b: u16, x: f32) {
        let nan =
            |v: u16, exp_mask: u16| (v & exp_mask) == exp_mask && (v & !exp_mask & 0x7fff) != 0;
        if x.is_nan() {
            assert!(nan(a, 0x7c00) || nan(a, 0x7f80), "{x:?}: {a:#x}");
        } else {
            assert_eq!(a, b, "{x:e} ({:#x})", x.to_bits());
        }
    }

    #[test]
    fn f16_widening_matches_half_on_every_value() {
        for h in 0..=u16::MAX {
            let ours = Store::<f32>::load(f16::from_bits(h));
            let theirs = f16::from_bits(h).to_f32();
            if theirs.is_nan() {
                assert!(ours.is_nan() && ours.to_bits() & 0x0040_0000 != 0, "{h:#x}");
            } else {
                assert_eq!(ours.to_bits(), theirs.to_bits(), "{h:#x}");
            }
        }
    }

    #[test]
    fn bf16_widening_matches_half_on_every_value() {
        for h in 0..=u16::MAX {
            let (ours, theirs) = (
                Store::<f32>::load(bf16::from_bits(h)),
                bf16::from_bits(h).to_f32(),
            );
            assert_eq!(ours.to_bits(), theirs.to_bits(), "{h:#x}");
        }
    }

    #[test]
    fn narrowing_rounds_like_half() {
        for x in f32_samples() {
            let (ours, theirs) = (<f16 as Store<f32>>::store(x), f16::from_f32(x));
            same(ours.to_bits(), theirs.to_bits(), x);
            let (ours, theirs) = (<bf16 as Store<f32>>::store(x), bf16::from_f32(x));
            same(ours.to_bits(), theirs.to_bits(), x);
        }
    }
}
