//! Stochastic rounding of f32 into bfloat16 and float16.
//!
//! A value between two neighbours of the 16-bit format becomes the one away
//! from zero with probability (its distance from the one towards zero) /
//! (their gap), so the rounding is unbiased and small updates survive on
//! average instead of being lost. Exact values never move; NaN stays NaN
//! (made quiet); infinities stay. Overflow follows round to nearest: a finite
//! value rounds to infinity exactly where rounding to nearest would (from the
//! largest finite value plus half its gap on: 65520 for float16), and a value
//! between the largest finite one and that point is stored as the largest
//! (infinity is not a neighbour to round up to: a param at the top of the
//! range must not turn infinite on a coin toss).
//!
//! The rule on bits, with `r` 32 random bits: drop `k` low bits of the
//! magnitude and add one unit when the top `k` bits of `r` (as an integer)
//! are below the dropped bits. bfloat16: k = 16. float16 normal numbers: 13.
//! float16 subnormals (|x| < 2^-14): the dropped fraction of `|x| * 2^24`,
//! taken to 32 bits (truncated beyond, for |x| < 2^-32, a bias under 2^-32
//! of the smallest subnormal), against all of `r`.
//!
//! The random bits are a counter-based hash, so every SIMD level, thread
//! count and a GPU give the same bits: nested hashing of (seed, step,
//! tensor position, element index) as in Jarzynski and Olano, "Hash Functions for GPU
//! Rendering" (JCGT 2020), with Chris Wellons' `lowbias32` integer mixer
//! (the hash-prospector project). Only 32-bit wrapping multiplies, xors and
//! shifts, so WGSL computes the same bits.

use half::{bf16, f16};

use crate::error::StepError;
use crate::simd::SimdLevel;

use super::codec::{check_len, run, Job};
use super::lanes::Lanes;

/// Chris Wellons' `lowbias32`: a bijective 32-bit mixer (xorshift-multiply,
/// constants found by his hash-prospector search).
#[inline(always)]
pub const fn lowbias32(mut x: u32) -> u32 {
    x ^= x >> 16;
    x = x.wrapping_mul(0x7feb_352d);
    x ^= x >> 15;
    x = x.wrapping_mul(0x846c_a68b);
    x ^= x >> 16;
    x
}

/// What the random bits of one rounding depend on besides the element index.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct StochasticKey {
    /// The user's seed (the `rounding_seed` option).
    pub seed: u64,
    /// The step number (from 1).
    pub step: u64,
    /// The tensor's position in its optimizer, counted over all groups.
    pub tensor: u64,
}

impl StochasticKey {
    /// The per-element key for indices whose top 32 bits are `index_hi`:
    /// each word nested into the hash of the ones before it (the golden-ratio
    /// start keeps an all-zero input from hashing to 0).
    pub const fn key(&self, index_hi: u32) -> u32 {
        let mut h = lowbias32(0x9e37_79b9 ^ self.seed as u32);
        h = lowbias32(h ^ (self.seed >> 32) as u32);
        h = lowbias32(h ^ self.step as u32);
        h = lowbias32(h ^ (self.step >> 32) as u32);
        h = lowbias32(h ^ self.tensor as u32);
        h = lowbias32(h ^ (self.tensor >> 32) as u32);
        lowbias32(h ^ index_hi)
    }

    /// The 32 random bits of element `index`.
    pub const fn bits(&self, index: u64) -> u32 {
        lowbias32(index as u32 ^ self.key((index >> 32) as u32))
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

/// `|x|`'s bits from which round to nearest gives infinity: bfloat16's
/// largest finite value plus half its gap.
const BF16_OVERFLOW: u32 = 0x7f7f_8000;
/// The same for float16: 65520.
const F16_OVERFLOW: u32 = 0x477f_f000;

/// `x` to bfloat16 bits, rounded with the random bits `r`.
#[inline(always)]
pub fn bf16_bits(x: f32, r: u32) -> u16 {
    let b = x.to_bits();
    let a = b & 0x7fff_ffff;
    let up = ((r >> 16) < (b & 0xffff)) as u32;
    // Below the overflow point the result stops at the largest finite value.
    let finite = ((a >> 16) + up).min(0x7f7f);
    let magnitude = select(a >= BF16_OVERFLOW, 0x7f80, finite);
    let nan = a > 0x7f80_0000;
    select(nan, (b >> 16) | 0x40, magnitude | ((b >> 16) & 0x8000)) as u16
}

/// `x` to float16 bits, rounded with the random bits `r`.
#[inline(always)]
pub fn f16_bits(x: f32, r: u32) -> u16 {
    let b = x.to_bits();
    let sign = (b >> 16) & 0x8000;
    let a = b & 0x7fff_ffff;
    // Normal range: drop 13 bits, rebias the exponent; below the overflow
    // point stop at the largest finite value, from it on infinity.
    let up = ((r >> 19) < (a & 0x1fff)) as u32;
    let normal = (a >> 13)
        .wrapping_sub((127 - 15) << 10)
        .wrapping_add(up)
        .min(0x7bff);
    let normal = select(a >= F16_OVERFLOW, 0x7c00, normal);
    // Below 2^-14 the float16 is |x| * 2^24 as an integer: |x| = m * 2^(e - 150),
    // so `dropped` = 126 - e bits of the significand m fall below the unit.
    let e = (a >> 23).max(1);
    let m = (a & 0x7f_ffff) | select(a >> 23 != 0, 0x80_0000, 0);
    let dropped = 126u32.wrapping_sub(e);
    let whole = m >> dropped.min(31);
    let fraction = select(
        dropped <= 32,
        m.wrapping_shl(32u32.wrapping_sub(dropped)),
        m >> dropped.wrapping_sub(32).min(31),
    );
    let sub = whole + (r < fraction) as u32;
    let nan = 0x7e00 | ((a >> 13) & 0x3ff);
    let finite = select(a >= 113 << 23, normal, sub);
    (select(a > 0x7f80_0000, nan, finite) | sign) as u16
}

/// A 16-bit format stochastic rounding can store into.
pub trait Sixteen: Copy {
    /// `x` rounded with the random bits `r`.
    fn round(x: f32, r: u32) -> Self;
}

impl Sixteen for bf16 {
    #[inline(always)]
    fn round(x: f32, r: u32) -> bf16 {
        bf16::from_bits(bf16_bits(x, r))
    }
}

impl Sixteen for f16 {
    #[inline(always)]
    fn round(x: f32, r: u32) -> f16 {
        f16::from_bits(f16_bits(x, r))
    }
}

struct Round<'a, D> {
    key: StochasticKey,
    first_index: u64,
    src: &'a [f32],
    dst: &'a mut [D],
}

impl<'a, D> Round<'a, D> {
    fn new(key: StochasticKey, first_index: u64, src: &'a [f32], dst: &'a mut [D]) -> Self {
        Round {
            key,
            first_index,
            src,
            dst,
        }
    }
}

impl<D: Sixteen> Job for Round<'_, D> {
    type Out = ();
    #[inline(always)]
    unsafe fn run<L: Lanes>(self) {
        // The same loop at every level: written for the autovectorizer, which
        // turns it into vector integer code inside each level's function.
        let mut done = 0;
        while done < self.src.len() {
            let index = self.first_index.wrapping_add(done as u64);
            // A stretch whose indices share their top 32 bits, so one key serves it.
            let len = ((1u64 << 32) - (index & 0xffff_ffff)).min((self.src.len() - done) as u64);
            let len = len as usize;
            let key = self.key.key((index >> 32) as u32);
            let low = index as u32;
            let src = &self.src[done..done + len];
            let dst = &mut self.dst[done..done + len];
            for (i, (d, &x)) in dst.iter_mut().zip(src).enumerate() {
                *d = D::round(x, lowbias32(low.wrapping_add(i as u32) ^ key));
            }
            done += len;
        }
    }
}

/// `dst[i]` = `src[i]` rounded stochastically to bfloat16 or float16, with
/// the random bits of element `first_index + i` under `key`.
pub fn round_stochastic<D: Sixteen>(
    level: SimdLevel,
    key: StochasticKey,
    first_index: u64,
    src: &[f32],
    dst: &mut [D],
) -> Result<(), StepError> {
    check_len("dst", src.len(), dst.len())?;
    run(level, Round::new(key, first_index, src, dst))
}

/// [`round_stochastic`] for a step that checked its level and lengths.
pub(crate) fn round_checked<D: Sixteen>(
    level: SimdLevel,
    key: StochasticKey,
    first_index: u64,
    src: &[f32],
    dst: &mut [D],
) {
    // The step checked that this CPU has `level`; the scalar code gives the same bits anyway.
    let level = if level.is_supported() {
        level
    } else {
        SimdLevel::Scalar
    };
    let done = run(level, Round::new(key, first_index, src, dst));
    debug_assert!(done.is_ok() && src.len() == dst.len());
}
