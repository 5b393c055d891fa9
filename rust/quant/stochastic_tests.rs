//! Stochastic rounding against a reference written in f64 from the rule,
//! its statistics (unbiased, a neighbour every time), and its determinism.

use half::{bf16, f16};

use crate::kernel_tests::Rng;
use crate::SimdLevel;

use super::stochastic::{bf16_bits, f16_bits, lowbias32, round_stochastic, Sixteen, StochasticKey};

/// A 16-bit format described by its numbers only (for the reference).
trait Format: Copy + PartialEq + std::fmt::Debug {
    /// The largest finite value, and the least value round to nearest takes to infinity.
    const MAX: f64;
    const OVERFLOW: f64;
    fn nearest(x: f32) -> Self;
    fn value(self) -> f64;
    fn from_bits(b: u16) -> Self;
    fn to_bits(self) -> u16;
    fn rule(x: f32, r: u32) -> u16;
}

/// `Format` for a `half` type: its numbers and its rounding rule; the rest is
/// `half`'s own.
macro_rules! half_format {
    ($t:ident, max: $max:expr, overflow: $overflow:expr, rule: $rule:ident) => {
        impl Format for $t {
            const MAX: f64 = $max;
            const OVERFLOW: f64 = $overflow;
            fn nearest(x: f32) -> Self {
                $t::from_f32(x)
            }
            fn value(self) -> f64 {
                self.to_f64()
            }
            fn from_bits(b: u16) -> Self {
                $t::from_bits(b)
            }
            fn to_bits(self) -> u16 {
                $t::to_bits(self)
            }
            fn rule(x: f32, r: u32) -> u16 {
                $rule(x, r)
            }
        }
    };
}

// bfloat16's overflow is MAX + 2^111, half its gap.
half_format!(bf16, max: 3.3895313892515355e38, overflow: 3.3961775292304957e38, rule: bf16_bits);
half_format!(f16, max: 65504.0, overflow: 65520.0, rule: f16_bits);

/// The two candidates for `|x|` (the one towards zero first) and the
/// fraction of the gap `|x|` lies above the first, all exact in f64.
fn neighbours<F: Format>(x: f32) -> (f64, f64, f64) {
    let a = (x as f64).abs();
    if a >= F::OVERFLOW {
        return (f64::INFINITY, f64::INFINITY, 0.0);
    }
    if a > F::MAX {
        // Overflow as round to nearest: infinity is no neighbour to round up to.
        return (F::MAX, F::MAX, 0.0);
    }
    let n = F::nearest(x.abs()).value();
    let step = |v: f64, up: bool| {
        let b = F::nearest(v as f32).to_bits();
        F::from_bits(if up { b + 1 } else { b - 1 }).value()
    };
    let (lo, hi) = if n <= a {
        (n, if n == a { n } else { step(n, true) })
    } else {
        (step(n, false), n)
    };
    let fraction = if hi == lo { 0.0 } else { (a - lo) / (hi - lo) };
    (lo, hi, fraction)
}

/// The rule in numbers: away from zero when r < the fraction taken to 32 bits.
fn reference<F: Format>(x: f32, r: u32) -> f64 {
    let (lo, hi, fraction) = neighbours::<F>(x);
    let up = (r as f64) < (fraction * 2f64.powi(32)).floor();
    let magnitude = if up { hi } else { lo };
    if x.is_sign_negative() {
        -magnitude
    } else {
        magnitude
    }
}

fn samples(rng: &mut Rng) -> Vec<f32> {
    let mut out = vec![
        0.0,
        -0.0,
        1.0,
        f32::MAX,
        -f32::MAX,
        65504.0,
        65519.0,
        65520.0,
        65535.0,
    ];
    out.extend([
        65536.0,
        1e6,
        6e-8,
        2.9e-8,
        3e-8,
        1e-30,
        f32::MIN_POSITIVE,
        1e-45,
        -1e-40,
    ]);
    for bits in (0..0x7f80_0000u32).step_by(9973) {
        out.extend([f32::from_bits(bits), -f32::from_bits(bits ^ 0x5a5a)]);
    }
    for _ in 0..20_000 {
        let e = (rng.next_f64() * 60.0) as i32 - 40;
        out.push((rng.next_f64() * 2f64.powi(e)) as f32);
    }
    out
}

fn random_bits(rng: &mut Rng) -> [u32; 6] {
    let r = (rng.next_f64().to_bits() >> 7) as u32;
    [0, u32::MAX, 1 << 31, (1 << 31) - 1, r, r.rotate_left(13)]
}

fn check_rule<F: Format>() {
    let mut rng = Rng(17);
    for x in samples(&mut rng) {
        for r in random_bits(&mut rng) {
            let got = F::from_bits(F::rule(x, r)).value();
            let want = reference::<F>(x, r);
            assert_eq!(
                got.to_bits(),
                want.to_bits(),
                "{x:e} ({:#x}) r={r:#x}",
                x.to_bits()
            );
        }
    }
}

#[test]
fn bfloat16_follows_the_rule() {
    check_rule::<bf16>();
}

#[test]
fn float16_follows_the_rule() {
    check_rule::<f16>();
}

#[test]
fn exact_values_never_move_and_nan_and_infinity_stay() {
    let mut rng = Rng(2);
    for h in 0..=u16::MAX {
        for r in random_bits(&mut rng) {
            for (value, rounded, exponent) in [
                (
                    bf16::from_bits(h).to_f32(),
                    bf16_bits(bf16::from_bits(h).to_f32(), r),
                    0x7f80,
                ),
                (
                    f16::from_bits(h).to_f32(),
                    f16_bits(f16::from_bits(h).to_f32(), r),
                    0x7c00,
                ),
            ] {
                if value.is_nan() {
                    // NaN stays NaN, quiet (the top mantissa bit set).
                    let quiet = (exponent >> 1) & !exponent;
                    assert!(
                        rounded & exponent == exponent && rounded & quiet != 0,
                        "{h:#x}"
                    );
                } else {
                    assert_eq!(rounded, h, "{value:e} r={r:#x}");
                }
            }
        }
    }
}

/// Round `n` copies of each value and check that the mean error is within
/// six standard deviations of 0; the variance of one rounding of `x` between
/// `lo` and `hi` is (x - lo)(hi - x).
fn check_unbiased<F: Format>(values: &[f32], convert: impl Fn(&[f32], u64) -> Vec<f64>) {
    let n = 1_000_000;
    for &x in values {
        let src = vec![x; n];
        // Infinity stands for the value past the largest, as in the rule.
        let got: Vec<f64> = convert(&src, 3).iter().map(|v| v.abs()).collect();
        let (lo, hi, _) = neighbours::<F>(x);
        let a = (x as f64).abs();
        let variance = (a - lo) * (hi - a);
        let mean = got.iter().sum::<f64>() / n as f64;
        let sigma = (variance / n as f64).sqrt();
        assert!(variance > 0.0, "{x:e} is not exact");
        assert!(
            (mean - a).abs() <= 6.0 * sigma,
            "{x:e}: mean {mean:e}, sigma {sigma:e}"
        );
        assert!(got.iter().all(|&v| v == lo || v == hi));
    }
}

#[test]
fn rounding_is_unbiased_over_a_million_elements() {
    let level = SimdLevel::detect();
    let key = StochasticKey {
        seed: 42,
        step: 7,
        tensor: 3,
    };
    let bf = |src: &[f32], first: u64| {
        let mut dst = vec![bf16::ZERO; src.len()];
        round_stochastic(level, key, first, src, &mut dst).unwrap();
        dst.iter().map(|v| v.to_f64()).collect()
    };
    check_unbiased::<bf16>(&[1.0 + 2f32.powi(-10), -3.3e-3, 1.0e-39, 0.7], bf);
    let h = |src: &[f32], first: u64| {
        let mut dst = vec![f16::ZERO; src.len()];
        round_stochastic(level, key, first, src, &mut dst).unwrap();
        dst.iter().map(|v| v.to_f64()).collect()
    };
    // Normal, subnormal, under the smallest subnormal, and the top gap.
    check_unbiased::<f16>(
        &[1.0 + 2f32.powi(-12), -3.3e-3, 1.0e-6, -2.0e-8, 65500.0],
        h,
    );
}

/// `n` copies of `x` rounded stochastically at `level`, as bits.
fn rounded_to<D: Sixteen + Format>(level: SimdLevel, x: f32, n: usize) -> Vec<u16> {
    let key = StochasticKey {
        seed: 5,
        step: 1,
        tensor: 0,
    };
    let mut dst = vec![D::from_bits(0); n];
    round_stochastic(level, key, 0, &vec![x; n], &mut dst).unwrap();
    dst.iter().map(|d| d.to_bits()).collect()
}

fn sign_bit(sign: f32) -> u16 {
    if sign < 0.0 {
        0x8000
    } else {
        0
    }
}

#[test]
fn overflow_is_round_to_nearest_s_at_every_level() {
    // Past the largest finite value: the largest, every time, until round to
    // nearest overflows; from there on, infinity every time.
    let n = 10_000;
    let key = StochasticKey {
        seed: 5,
        step: 1,
        tensor: 0,
    };
    let f16_max = f16::MAX.to_f32();
    let bf16_max = bf16::MAX.to_f32();
    let next = |x: f32| f32::from_bits(x.to_bits() + 1);
    let prev = |x: f32| f32::from_bits(x.to_bits() - 1);
    for level in SimdLevel::supported() {
        for sign in [1.0f32, -1.0] {
            let all = |got: Vec<u16>, want: u16, x: f32| {
                let want = want | sign_bit(sign);
                assert!(got.iter().all(|&d| d == want), "{level} {x:e}");
            };
            for (x, want) in [
                (next(f16_max), f16::MAX),
                (65519.99, f16::MAX),
                (65520.0, f16::INFINITY),
                (f32::MAX, f16::INFINITY),
            ] {
                all(rounded_to::<f16>(level, sign * x, n), want.to_bits(), x);
            }
            for (x, want) in [
                (next(bf16_max), bf16::MAX),
                (prev(f32::from_bits(0x7f7f_8000)), bf16::MAX),
                (f32::from_bits(0x7f7f_8000), bf16::INFINITY),
                (f32::MAX, bf16::INFINITY),
            ] {
                all(rounded_to::<bf16>(level, sign * x, n), want.to_bits(), x);
            }
        }
        // Just under the largest finite value: the largest or its lower neighbour.
        let mut dst = vec![f16::ZERO; n];
        round_stochastic(level, key, 0, &vec![65503.0; n], &mut dst).unwrap();
        assert!(dst
            .iter()
            .all(|d| d.to_f32() == 65504.0 || d.to_f32() == 65472.0));
        assert!(dst.iter().any(|d| d.to_f32() == 65504.0));
    }
    // Round to nearest agrees on where infinity starts.
    assert_eq!(f16::from_f32(prev(65520.0)), f16::MAX);
    assert_eq!(f16::from_f32(65520.0), f16::INFINITY);
    assert_eq!(bf16::from_f32(prev(f32::from_bits(0x7f7f_8000))), bf16::MAX);
    assert_eq!(bf16::from_f32(f32::from_bits(0x7f7f_8000)), bf16::INFINITY);
}

#[test]
fn same_bits_on_every_level_cut_and_index_stretch() {
    let mut rng = Rng(4);
    let n = 10_000;
    let src: Vec<f32> = samples(&mut rng).into_iter().cycle().take(n).collect();
    let key = StochasticKey {
        seed: 0x1234_5678_9abc_def0,
        step: 1 << 33,
        tensor: (1 << 32) + 5,
    };
    // The first index crosses 2^32, where the key of the top half changes.
    let first = (1u64 << 32) - 4321;
    let want: Vec<u16> = (0..n)
        .map(|i| f16_bits(src[i], key.bits(first + i as u64)))
        .collect();
    for level in SimdLevel::supported() {
        let mut whole = vec![f16::ZERO; n];
        round_stochastic(level, key, first, &src, &mut whole).unwrap();
        let mut cut = vec![f16::ZERO; n];
        for (k, (d, s)) in cut.chunks_mut(777).zip(src.chunks(777)).enumerate() {
            round_stochastic(level, key, first + 777 * k as u64, s, d).unwrap();
        }
        let bits = |v: &[f16]| v.iter().map(|h| h.to_bits()).collect::<Vec<_>>();
        assert_eq!(bits(&whole), want, "{level}");
        assert_eq!(bits(&cut), want, "{level}");
        let mut b = vec![bf16::ZERO; n];
        round_stochastic(level, key, first, &src, &mut b).unwrap();
        for (i, v) in b.iter().enumerate() {
            assert_eq!(v.to_bits(), bf16_bits(src[i], key.bits(first + i as u64)));
        }
    }
}

#[test]
fn the_random_bits_look_uniform_and_change_with_seed_step_and_index() {
    // Chi-square of the top 8 bits over 2^20 consecutive indices (255 degrees
    // of freedom: mean 255, sd 22.6; 400 is 6.4 sd out).
    for key in [
        StochasticKey::default(),
        StochasticKey {
            seed: 1,
            step: 1,
            tensor: 0,
        },
        StochasticKey {
            seed: 1,
            step: 2,
            tensor: 7,
        },
    ] {
        let n = 1 << 20;
        let mut counts = [0u32; 256];
        for i in 0..n {
            counts[(key.bits(i) >> 24) as usize] += 1;
        }
        let expected = n as f64 / 256.0;
        let chi2: f64 = counts
            .iter()
            .map(|&c| (c as f64 - expected).powi(2) / expected)
            .sum();
        assert!(chi2 < 400.0, "{key:?}: chi-square {chi2}");
    }
    // The same element on other steps and seeds: a half of the bits differ on average.
    let base = StochasticKey {
        seed: 9,
        step: 100,
        tensor: 4,
    };
    let mut differing = 0;
    for i in 0..10_000u64 {
        for other in [
            StochasticKey { step: 101, ..base },
            StochasticKey { seed: 10, ..base },
            StochasticKey { tensor: 5, ..base },
        ] {
            differing += (base.bits(i) ^ other.bits(i)).count_ones();
        }
        differing += (base.bits(i) ^ base.bits(i + 1)).count_ones();
    }
    let mean = differing as f64 / 40_000.0;
    assert!((mean - 16.0).abs() < 0.2, "{mean}");
    assert_eq!(lowbias32(0), 0);
    assert_ne!(StochasticKey::default().key(0), 0);
}

#[test]
fn a_length_mismatch_is_an_error_that_writes_nothing() {
    let key = StochasticKey {
        seed: 1,
        step: 1,
        tensor: 0,
    };
    let mut dst = [bf16::ONE; 3];
    assert!(round_stochastic(SimdLevel::Scalar, key, 0, &[0.5; 4], &mut dst).is_err());
    assert_eq!(dst, [bf16::ONE; 3]);
}
