//! The dynamic tree quantization maps of Dettmers (2015), "8-Bit Approximations
//! for Parallelism in Deep Learning": the 256 float32 values an 8-bit code
//! stands for, the same bits as bitsandbytes' `create_dynamic_map(signed)`.
//!
//! The construction: decade `i` (0..7) holds `2^i` values (`2^(i+1)` in the
//! unsigned map) at `10^(i-6)` times the centres of `linspace(0.1, 1, k + 1)`'s
//! `k` intervals; the signed map adds their negatives; then 0 and 1. The
//! values are built here, at compile time, with the float32 arithmetic
//! bitsandbytes gets from torch, so they match it bit for bit:
//! * `torch.linspace` in float32 (CPU): `step = (end - start) / (k - 1)`
//!   rounded, then `start + step * j` below the middle index and
//!   `end - step * (k - 1 - j)` from it on, each rounded once. The `f64`
//!   expressions below are exact (a 24-bit step times j < 2^8 plus a float32
//!   spans under 53 bits), so one cast to `f32` rounds them once, as torch does.
//! * The centres, `(b[j] + b[j + 1]) / 2.0`, in float32.
//! * The scale `10 ** (i - 6)`, a Python float rounded to float32 before the
//!   float32 product (torch casts a Python scalar to the tensor's dtype).
//!
//! bitsandbytes then sorts the values; the decades do not overlap, so they
//! are laid out here in increasing order directly (a test checks the order).

/// Decades of the construction: 10^-6 up to 10^0.
const DECADES: usize = 7;

/// `10 ** (i - 6)` as Python computes it (the nearest f64), for decade `i`.
const SCALES: [f64; DECADES] = [1e-6, 1e-5, 1e-4, 1e-3, 1e-2, 1e-1, 1.0];

/// `torch.linspace(0.1, 1, k, dtype=float32)[j]`, as computed on the CPU.
const fn linspace(k: usize, j: usize) -> f32 {
    let start = 0.1f32;
    let end = 1.0f32;
    let step = (end - start) / (k - 1) as f32;
    if j < k / 2 {
        (start as f64 + step as f64 * j as f64) as f32
    } else {
        (end as f64 - step as f64 * (k - 1 - j) as f64) as f32
    }
}

/// The centre of interval `j` of decade `i`, the decade holding `count` values.
const fn value(i: usize, count: usize, j: usize) -> f32 {
    let mean = (linspace(count + 1, j) + linspace(count + 1, j + 1)) / 2.0;
    (SCALES[i] as f32) * mean
}

/// Values per decade: 2^i, or 2^(i+1) in the unsigned map (no sign bit).
const fn decade_len(signed: bool, i: usize) -> usize {
    if signed {
        1 << i
    } else {
        2 << i
    }
}

/// The map, in increasing order.
const fn build(signed: bool) -> [f32; 256] {
    let mut out = [0f32; 256];
    let mut at = 0;
    if signed {
        // The negatives, largest magnitude first: decades downwards, centres downwards.
        let mut i = DECADES;
        while i > 0 {
            i -= 1;
            let mut j = decade_len(true, i);
            while j > 0 {
                j -= 1;
                out[at] = -value(i, decade_len(true, i), j);
                at += 1;
            }
        }
    }
    out[at] = 0.0;
    at += 1;
    let mut i = 0;
    while i < DECADES {
        let mut j = 0;
        while j < decade_len(signed, i) {
            out[at] = value(i, decade_len(signed, i), j);
            at += 1;
            j += 1;
        }
        i += 1;
    }
    out[at] = 1.0;
    assert!(at == 255, "the construction yields 256 values");
    out
}

/// `create_dynamic_map(signed=True)`: 127 negatives, 0 (code 127), 127 positives and 1.
pub const SIGNED: [f32; 256] = build(true);
/// `create_dynamic_map(signed=False)`: 0 (code 0), 254 positives and 1.
pub const UNSIGNED: [f32; 256] = build(false);

#[cfg(test)]
mod tests {
    use super::*;

    /// bitsandbytes' procedure again, transcribed with run-time float32
    /// operations (a fused multiply-add for torch's singly rounded linspace,
    /// a sort at the end), independently of the const construction above.
    fn bnb_transcription(signed: bool) -> Vec<f32> {
        let mut data = Vec::new();
        for i in 0..7i32 {
            let k = if signed {
                (1 << i) + 1
            } else {
                (1 << (i + 1)) + 1
            };
            let step = (1.0f32 - 0.1f32) / (k - 1) as f32;
            let b: Vec<f32> = (0..k)
                .map(|j| {
                    if j < k / 2 {
                        step.mul_add(j as f32, 0.1)
                    } else {
                        (-step).mul_add((k - 1 - j) as f32, 1.0)
                    }
                })
                .collect();
            let scale = 10f64.powi(i - 6) as f32;
            for w in b.windows(2) {
                let mean = (w[0] + w[1]) / 2.0;
                data.push(scale * mean);
                if signed {
                    data.push(-scale * mean);
                }
            }
        }
        data.extend([0.0, 1.0]);
        data.sort_by(f32::total_cmp);
        data
    }

    /// The paper's construction, read as a bit pattern and evaluated exactly
    /// (in f64): after the sign bit (signed map only), the number of leading
    /// zero bits is the decimal exponent E (scale 10^-E), the first one bit
    /// ends the exponent, and the bits after it index one of 2^f equal bins
    /// of [0.1, 1], whose centre is the value. All-zero bits are 0. The
    /// exponent stops at 6 (bitsandbytes' `max_exponent_bits=7`), and the one
    /// pattern left over (the signed map's negative zero, the unsigned map's
    /// 10^-7 bin) stands for 1.0.
    fn paper_values(signed: bool) -> Vec<f64> {
        let bits = if signed { 7 } else { 8 };
        let mut out = vec![0.0, 1.0];
        for pattern in 1u32..(1 << bits) {
            let exponent = pattern.leading_zeros() as i32 - (32 - bits);
            if exponent > 6 {
                continue;
            }
            let fraction_bits = bits - exponent - 1;
            let bin = pattern & ((1 << fraction_bits) - 1);
            let width = 0.9 / (1u32 << fraction_bits) as f64;
            let v = 10f64.powi(-exponent) * (0.1 + (bin as f64 + 0.5) * width);
            out.push(v);
            if signed {
                out.push(-v);
            }
        }
        out.sort_by(f64::total_cmp);
        out
    }

    #[test]
    fn maps_equal_a_run_time_transcription_of_bitsandbytes_bit_for_bit() {
        for (map, signed) in [(&SIGNED, true), (&UNSIGNED, false)] {
            let want = bnb_transcription(signed);
            assert_eq!(want.len(), 256);
            for (i, (a, b)) in map.iter().zip(&want).enumerate() {
                assert_eq!(
                    a.to_bits(),
                    b.to_bits(),
                    "signed={signed} code {i}: {a:e} vs {b:e}"
                );
            }
        }
    }

    #[test]
    fn maps_follow_the_papers_dynamic_tree() {
        for (map, signed) in [(&SIGNED, true), (&UNSIGNED, false)] {
            let exact = paper_values(signed);
            assert_eq!(exact.len(), 256, "signed={signed}");
            for (i, (&a, &b)) in map.iter().zip(&exact).enumerate() {
                // float32 arithmetic (a rounded step, sum, scale and product)
                // stays within a few float32 ulps of the exact value.
                let ulp = (b.abs() as f32).max(f32::MIN_POSITIVE);
                let ulp = (f32::from_bits(ulp.to_bits() + 1) - ulp) as f64;
                assert!(
                    (a as f64 - b).abs() <= 4.0 * ulp,
                    "signed={signed} code {i}: {a:e} vs exact {b:e}"
                );
            }
        }
    }

    #[test]
    fn maps_are_increasing_with_zero_and_one_where_bitsandbytes_puts_them() {
        for map in [&SIGNED, &UNSIGNED] {
            assert!(map.windows(2).all(|w| w[0] < w[1]));
            assert_eq!(map[255], 1.0);
        }
        assert_eq!(SIGNED[127].to_bits(), 0);
        assert_eq!(UNSIGNED[0].to_bits(), 0);
        assert_eq!(SIGNED[0], -SIGNED[254]);
        // The negatives mirror the positives exactly (codes 126 - j and 128 + j).
        for j in 0..127 {
            assert_eq!(SIGNED[126 - j].to_bits(), (-SIGNED[128 + j]).to_bits());
        }
    }
}
