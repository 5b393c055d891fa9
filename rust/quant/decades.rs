//! The nearest code of `|y|` by arithmetic: no table of cells, and on the
//! vector levels no gather for nearly every value (a gather of 8 lanes
//! costs about 15 cycles on AMD Zen 3). Three steps, each exact or checked:
//!
//! 1. The region of `|y|`: 0 (the code of 0), `d + 1` for decade `d` (0..7),
//!    or 8 (the code of 1). The regions' lower ends are float32 midpoints,
//!    compared exactly on bits (ties to the even code resolved here, once).
//!    No pair of binary octaves holds two of them, so a 16-entry table over
//!    `|y|`'s top 7 bits gives the region or the one below, and one
//!    comparison with the next region's lower end settles it.
//! 2. Decade `d` holds `n` codes (`2^(d+1)` unsigned, `2^d` signed) on equal
//!    bins of `[0.1, 1] * 10^(d-6)`, so its midpoints sit near the integers
//!    of `n * u`, where `u = |y| * alpha_d + beta` runs from 0 to 1 over the
//!    decade. `v = fma(|y|, alpha_d, 1 + beta)` is `1 + u` (clamped below 2),
//!    and adding `k` to `v`'s exponent gives `w = v * 2^k = n + n * u` (the
//!    signed map halves `alpha` and `1 + beta`, and `k` is the region; the
//!    unsigned map's `k` is the region, at least 1). `lo = trunc(w)` is the
//!    code less a constant: 1 (unsigned: decade `d` starts at code `n - 1`)
//!    or -127 (signed: at `n + 127`). Regions 0 and 8 share one `alpha` that
//!    puts their `w` in the unit interval of their code.
//! 3. `hi` is `lo` for `v` raised by [`GUARD`] units in its last place. The
//!    code is `v`'s top `k <= 7` fraction bits, so `lo == hi` unless that
//!    raise carries into fraction bit 7 (bit [`INDEX_BITS_FROM`]), which the
//!    caller checks per group of four vectors; a group where it happens (a
//!    `|y|` within 2^-14 of a bin of a midpoint, or of a multiple of
//!    2^(7-k) bins) is encoded again by [`Loaded::exact`]: `lo`, then one
//!    comparison with the largest `|y|` of that code.
//!
//! AVX-512 with BW and DQ runs [`encode_avx512`]: the same steps with fewer
//! instructions (about 15 per vector of 16, where the generic loop at that
//! level takes about 22). The scalar level uses the codec's per-cell table
//! instead (`Codebook::cells`: a load and one comparison, where a scalar
//! fused multiply-add is a library call on x86_64 without FMA).
//!
//! Why `lo == hi` is exact: `lo` and `hi` are non-decreasing in `|y|` inside
//! a region (an fma, a minimum, an exponent add and a truncation, each
//! monotone), and [`Decades::new`] checks at compile time that every
//! midpoint `M` below a code `c` of a decade has `lo(M) < c <= hi(M)`, and
//! that each region's least and largest `|y|` get its first and last code.
//! So if `lo(y) == hi(y) == j`, every midpoint below a code `<= j` is below
//! `y` (else `lo(M) >= lo(y) = j`) and every other one is above it (else
//! `hi(M) <= j`): the code of `y` is `j`, and `y` is no tie.
//!
//! Negative `y` take the code of `|y|` mirrored (signed map: 127 less the
//! index, at least 0) or 0 (unsigned). The domain is `|y| <= 1 + 2^-23`:
//! the encoder multiplies values by the rounded reciprocal of their block's
//! largest magnitude.

use super::lanes::Lanes;

/// The per-map constants, in the form the vector code reads them. Region
/// tables have 8 entries, read at `r & 7`: regions 0 and 8 share entry 0.
pub(super) struct Decades {
    /// Per key of [`Lanes::octave_pair_lookup`] (`|y|`'s bits >> 24, less
    /// 48): the region of the key's smallest `|y|`.
    region: [u8; 16],
    /// Per region `r` below 8: the bits of the least `|y|` in region `r + 1`, minus one.
    next: [u32; 8],
    /// Per region: `alpha` (halved for the signed map).
    alpha: [f32; 8],
    /// `1 + beta` (halved for the signed map).
    one_beta: f32,
    /// The largest `v` (halved for the signed map).
    clamp: f32,
    /// Per key (as `region`): `next` of the key's region, so that both
    /// tables are read at once (AVX-512's encoder).
    #[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
    next_by_key: [u32; 16],
    /// Per region (0..=8): `k << 23`, the exponent add (AVX-512's encoder).
    #[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
    k_shifted: [u32; 16],
}

/// `hi`'s raise of `v`, in units in its last place: 2^-14 of a bin in the
/// widest decade.
pub(super) const GUARD: u32 = 4;
/// The lowest bit of `v` whose change changes an index (`k <= 7`).
pub(super) const INDEX_BITS_FROM: u32 = 23 - 7;
/// The least `|y|` bits the region lookup reads (smaller ones, all in region
/// 0, are raised to it): keys 49..=63, as `|y| < 2`.
const LEAST_KEYED: u32 = 49 << 24;
/// The largest `|y|` the encoder passes (`x * (1 / absmax)` with `|x| <= absmax`).
const LARGEST: f32 = 1.0 + f32::EPSILON;

/// The float32 midpoint below code `c`, as the encoder compares with it.
const fn mid(values: &[f32; 256], c: usize) -> f32 {
    (values[c - 1] + values[c]) * 0.5
}

/// The bits of the least `|y|` whose code is `c` or more (a `y` equal to a
/// midpoint goes to the even code).
const fn least(values: &[f32; 256], c: usize) -> u32 {
    mid(values, c).to_bits() + (c % 2) as u32
}

/// `a * b + c` rounded once, as `f32::mul_add` (which is not const): the
/// product is exact in f64, TwoSum gives the f64 sum's error, and only a sum
/// exactly halfway between two f32 needs it (to round the way the error points).
pub(super) const fn fma(a: f32, b: f32, c: f32) -> f32 {
    let p = a as f64 * b as f64;
    let s = p + c as f64;
    let bp = s - p;
    let err = (p - (s - bp)) + (c as f64 - bp);
    let r = s as f32;
    if err == 0.0 || r as f64 == s {
        return r;
    }
    // The f32 neighbour of r on s's side.
    let towards_zero = (s > r as f64) != (r > 0.0);
    let other = if r == 0.0 {
        f32::from_bits(if s > 0.0 { 1 } else { 0x8000_0001 })
    } else if towards_zero {
        f32::from_bits(r.to_bits() - 1)
    } else {
        f32::from_bits(r.to_bits() + 1)
    };
    let (rd, od) = (r as f64, other as f64);
    let halfway = if rd < od {
        s - rd == od - s
    } else {
        rd - s == s - od
    };
    if !halfway {
        r
    } else if (err > 0.0) == (od > rd) {
        other
    } else {
        r
    }
}

/// `trunc(v * 2^k)`, as the vector code computes it (an exponent add on `v`'s
/// bits, exact for the normal `v` here, then a truncation).
const fn scaled_trunc(v: u32, k: u32) -> i64 {
    f32::from_bits(v + (k << 23)) as i64
}

impl Decades {
    /// The constants for `values` (increasing; the code of 0 at `zero`,
    /// 127 or 0), checked as the module doc says.
    pub(super) const fn new(values: &[f32; 256], zero: usize) -> Self {
        assert!(zero == 0 || zero == 127);
        let signed = zero == 127;
        // first[r]: the first code of region r; codes = trunc(w) + offset.
        let offset: i64 = if signed { 127 } else { -1 };
        let mut first = [0usize; 10];
        let mut r = 0;
        while r < 9 {
            let n = if signed { (1 << r) >> 1 } else { 1 << r };
            first[r] = (n + offset) as usize;
            r += 1;
        }
        assert!(first[0] == zero && first[8] == 255);
        first[9] = 256;
        let mut next = [0u32; 8];
        let mut r = 0;
        while r < 8 {
            assert!(r == 0 || least(values, first[r + 1]) > least(values, first[r]));
            next[r] = least(values, first[r + 1]) - 1;
            r += 1;
        }
        // Region of each key: the regions whose least |y| is at or below the
        // key's smallest |y|; at most one more may start inside the key's range.
        let mut region = [0u8; 16];
        let mut key = 1;
        while key < 16 {
            let lowest = (key + 48) << 24;
            let end = (key + 49) << 24;
            let (mut at, mut within) = (0, 0);
            let mut r = 1;
            while r < 9 {
                let l = least(values, first[r]);
                if l <= lowest {
                    at += 1;
                } else if l < end {
                    within += 1;
                }
                r += 1;
            }
            assert!(
                within <= 1,
                "a key's range holds at most one region boundary"
            );
            assert!(at <= 7);
            region[key as usize] = at;
            key += 1;
        }
        assert!(region[1] == 0, "the raised |y| are in region 0");
        // region[0] stays 0: AVX2's filler bytes read it.
        let halve: f32 = if signed { 0.5 } else { 1.0 };
        let d9 = 1.0f32 - 0.1f32;
        let beta = -(0.1f32 as f64) / d9 as f64;
        // Below 2 by more than GUARD units (2^-23 each before halving).
        let clamp = (2.0 - (GUARD + 1) as f32 * f32::EPSILON) * halve;
        // Each decade's bins: u = |y| / (s * d9) - 0.1 / d9, s = 10^(d - 6).
        let scales = [1e-6f64, 1e-5, 1e-4, 1e-3, 1e-2, 1e-1, 1.0];
        let mut alpha = [0f32; 8];
        let mut r = 1;
        while r < 8 {
            let s = scales[r - 1] as f32 as f64;
            alpha[r] = (1.0 / (s * d9 as f64) * halve as f64) as f32;
            r += 1;
        }
        // Regions 0 and 8: region 8's |y| (0.998 to 1 + 2^-23) give v in
        // [1, 1 + 2^-8), so w in [256, 257) unsigned and [128, 129) signed
        // (code 255); region 0's (below 2^-22) leave v at about 1 + beta,
        // 0.889, so w in [1, 2) unsigned (k = 1) and [0, 1) signed (code 0
        // and 127). The checks below hold both ends of both regions to it.
        alpha[0] = 0.113 * halve;
        // 1 + beta a little low, so that every midpoint's lo is below its code ...
        let ideal = ((1.0 + beta) * halve as f64) as f32;
        let mut below = 0.0;
        let one_beta = loop {
            let one_beta = ideal - below;
            if Self::separated(values, &first, &alpha, one_beta, clamp, 0, offset) {
                break one_beta;
            }
            below = if below == 0.0 {
                f32::EPSILON * halve
            } else {
                below * 2.0
            };
            assert!(
                below <= GUARD as f32 * f32::EPSILON,
                "the decades' midpoints are evenly spaced"
            );
        };
        // ... and GUARD units up, at or above it.
        assert!(
            Self::separated(values, &first, &alpha, one_beta, clamp, GUARD, offset),
            "GUARD covers every midpoint"
        );
        let mut next_by_key = [0u32; 16];
        let mut k_shifted = [0u32; 16];
        let mut i = 0;
        while i < 16 {
            next_by_key[i] = next[region[i] as usize];
            let k = if i > 1 || signed { i } else { 1 };
            k_shifted[i] = if i <= 8 { (k as u32) << 23 } else { 0 };
            i += 1;
        }
        Decades {
            region,
            next,
            alpha,
            one_beta,
            clamp,
            next_by_key,
            k_shifted,
        }
    }

    /// With `guard` 0 (`lo`): every midpoint's code is below the code above
    /// it. With `guard` > 0 (`hi`): at least that code. Either way every
    /// region's least and largest `|y|` get its first and last code.
    const fn separated(
        values: &[f32; 256],
        first: &[usize; 10],
        alpha: &[f32; 8],
        one_beta: f32,
        clamp: f32,
        guard: u32,
        offset: i64,
    ) -> bool {
        let mut ok = true;
        let mut r = 0;
        while r < 9 {
            // The region's ends.
            let lowest = if r == 0 {
                0.0
            } else {
                f32::from_bits(least(values, first[r]))
            };
            let highest = if r == 8 {
                LARGEST
            } else {
                f32::from_bits(least(values, first[r + 1]) - 1)
            };
            let c = Self::code_of(lowest, r, alpha, one_beta, clamp, guard, offset > 0) + offset;
            ok &= c == first[r] as i64;
            let c = Self::code_of(highest, r, alpha, one_beta, clamp, guard, offset > 0) + offset;
            ok &= c == first[r + 1] as i64 - 1;
            // Its midpoints.
            let mut c = first[r] + 1;
            while c < first[r + 1] {
                let m = mid(values, c);
                let at = Self::code_of(m, r, alpha, one_beta, clamp, guard, offset > 0) + offset;
                ok &= if guard == 0 {
                    at < c as i64
                } else {
                    at >= c as i64
                };
                c += 1;
            }
            r += 1;
        }
        ok
    }

    /// `trunc(w)` for `|y|` in region `r`, as [`Loaded::code`] computes it,
    /// `v` raised by `guard` units (`hi`) or not (`lo`).
    const fn code_of(
        y: f32,
        r: usize,
        alpha: &[f32; 8],
        one_beta: f32,
        clamp: f32,
        guard: u32,
        signed: bool,
    ) -> i64 {
        let y = if y.to_bits() < LEAST_KEYED {
            f32::from_bits(LEAST_KEYED)
        } else {
            y
        };
        let mut v = fma(y, alpha[r & 7], one_beta);
        if v > clamp {
            v = clamp;
        }
        let k = if r > 1 || signed { r as u32 } else { 1 };
        scaled_trunc(v.to_bits() + guard, k)
    }
}

/// The tables of a [`Decades`], loaded once per loop; `SIGNED` for the
/// signed map.
pub(super) struct Loaded<L: Lanes, const SIGNED: bool> {
    region: L::T16B,
    next: L::T8U,
    alpha: L::T8F,
    one_beta: L::F,
    clamp: L::F,
}

impl<L: Lanes, const SIGNED: bool> Loaded<L, SIGNED> {
    /// # Safety
    /// `L`'s level must be enabled; `d` must outlive the tables (the scalar
    /// level holds pointers to them).
    #[inline(always)]
    pub(super) unsafe fn new(d: &Decades) -> Self {
        // SAFETY: `L`'s level is enabled, as this function's contract requires; the caller keeps
        // SAFETY: `d` alive while the tables are used.
        unsafe {
            Loaded {
                region: L::table_b(&d.region),
                next: L::table_u(&d.next),
                alpha: L::table_f(&d.alpha),
                one_beta: L::splat(d.one_beta),
                clamp: L::splat(d.clamp),
            }
        }
    }

    /// `|y|` raised to the least keyed magnitude (the unsigned map's
    /// negative `y`, negative as integers, are all raised: region 0, code
    /// 0), and `lo` and `v` (its bits) for it.
    ///
    /// # Safety
    /// `L`'s level must be enabled.
    #[inline(always)]
    unsafe fn lower(&self, y: L::U) -> (L::U, L::U, L::U) {
        // SAFETY: `L`'s level is enabled, as this function's contract requires.
        unsafe {
            let magnitude = if SIGNED {
                L::and(y, L::splat_u(0x7fff_ffff))
            } else {
                y
            };
            let magnitude = L::max_i(magnitude, L::splat_u(LEAST_KEYED));
            let estimate = L::octave_pair_lookup(self.region, magnitude);
            let region = L::inc_where_gt(estimate, magnitude, L::permute_u(self.next, estimate));
            let v = L::fma(
                L::from_bits(magnitude),
                L::permute_f(self.alpha, region),
                self.one_beta,
            );
            let v = L::bits(L::min_f(v, self.clamp));
            // k: the region (signed); at least 1 (unsigned, whose region 0 has k = 1).
            let k = if SIGNED {
                region
            } else {
                L::max_i(region, L::splat_u(1))
            };
            let lo = L::trunc(L::from_bits(L::add_u(v, L::shl23(k))));
            (magnitude, lo, v)
        }
    }

    /// The code of `y` (its bits) in each lane (`|y| <= 1 + 2^-23`), and `v`
    /// (its bits): the code may be wrong where raising `v` by [`GUARD`]
    /// units carries into bit [`INDEX_BITS_FROM`].
    ///
    /// # Safety
    /// `L`'s level must be enabled.
    #[inline(always)]
    pub(super) unsafe fn code(&self, y: L::U) -> (L::U, L::U) {
        // SAFETY: `L`'s level is enabled, as this function's contract requires.
        unsafe {
            let (_, lo, v) = self.lower(y);
            let code = if SIGNED {
                // 127 + lo, mirrored for negative y: 127 - lo, at least 0.
                L::max_i(L::add_u(L::sign(lo, y), L::splat_u(127)), L::splat_u(0))
            } else {
                L::sub(lo, L::splat_u(1))
            };
            (code, v)
        }
    }

    /// The exact code of `y` (its bits) in each lane (`|y| <= 1 + 2^-23`):
    /// the code of `|y|` is `lo`'s or the next (`lo(M) < c <= lo(M) + 1`
    /// for the midpoint `M` below each code `c`, as `hi` is at most `lo + 1`),
    /// the next where `|y|` reaches its lower end: one comparison with
    /// `upper[c]`, the bits of the largest `|y|` of code `c` (`i32::MAX`
    /// for code 255).
    ///
    /// # Safety
    /// `L`'s level must be enabled; `upper` holds 256 entries.
    #[inline(always)]
    pub(super) unsafe fn exact(&self, y: L::U, upper: *const u32) -> L::U {
        // SAFETY: `L`'s level is enabled, as this function's contract requires; `c` is a
        // SAFETY: code (0..=255), inside `upper`'s 256 entries.
        unsafe {
            let (magnitude, lo, _) = self.lower(y);
            let c = if SIGNED {
                L::add_u(lo, L::splat_u(127))
            } else {
                L::sub(lo, L::splat_u(1))
            };
            let c = L::inc_where_gt(c, magnitude, L::gather_u(upper, c));
            if SIGNED {
                // Mirrored for negative y: 254 - c, at least 0 (255, the code of 1, mirrors to 0).
                let mirrored = L::max_i(L::sub(L::splat_u(254), c), L::splat_u(0));
                L::select_negative(y, mirrored, c)
            } else {
                c
            }
        }
    }
}

/// [`Loaded::code`] for 64 values at a time with AVX-512 F, BW and DQ, the
/// codes packed and stored: `out[j]` = the code of `x[j] * scale` for the
/// first `n / 64 * 64` values (`|x[j] * scale| <= 1 + 2^-23`); returns how
/// many it encoded and the undecided groups of 64 (bit `g`: values from
/// `64 g`), which the caller encodes again. The same operations as
/// [`Loaded::code`], fewer of them: `|y|` and its raise in one `vrangeps`
/// (signed map), `k`'s shift from a table (unsigned), the mirror as `w`'s
/// sign bit (one `vpternlogd`, truncating to `-lo`), the code offset and the
/// clamp at 0 in 16-bit lanes with the saturating packs, and the guard test
/// as one 16-bit maximum per vector.
///
/// # Safety
/// The CPU must have AVX-512 F, BW and DQ; `x` and `out` valid for `n` elements.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bw,avx512dq")]
#[inline(never)]
#[allow(clippy::incompatible_msrv)]
pub(super) unsafe fn encode_avx512<const SIGNED: bool>(
    d: &Decades,
    x: *const f32,
    scale: f32,
    out: *mut u8,
    n: usize,
) -> (usize, u64) {
    use std::arch::x86_64::*;
    // SAFETY: the tables are 16 bytes and 16 or 8 u32 long, as each load reads.
    let (region, next, k_shifted, alpha) = unsafe {
        let alpha = _mm256_loadu_ps(d.alpha.as_ptr());
        (
            _mm512_cvtepu8_epi32(_mm_loadu_si128(d.region.as_ptr() as *const __m128i)),
            _mm512_loadu_si512(d.next_by_key.as_ptr() as *const _),
            _mm512_loadu_si512(d.k_shifted.as_ptr() as *const _),
            // Held twice: region 8 reads entry 0.
            _mm512_insertf32x8::<1>(_mm512_castps256_ps512(alpha), alpha),
        )
    };
    let (one_beta, clamp) = (_mm512_set1_ps(d.one_beta), _mm512_set1_ps(d.clamp));
    let least = _mm512_set1_epi32(LEAST_KEYED as i32);
    let sign_bit = _mm512_set1_epi32(i32::MIN);
    let one = _mm512_set1_epi32(1);
    let splat = _mm512_set1_ps(scale);
    // Code = lo + 127 (signed, lo negative for negative y) or lo - 1.
    let offset = _mm512_set1_epi16(if SIGNED { 127 } else { -1 });
    let order = _mm512_setr_epi32(0, 4, 8, 12, 1, 5, 9, 13, 2, 6, 10, 14, 3, 7, 11, 15);
    let undecided_from = _mm512_set1_epi16(((1u32 << INDEX_BITS_FROM) - GUARD) as u16 as i16);
    // `w` (`v` with `k` added to its exponent and, signed, y's sign) and
    // its truncation.
    let lane = |y: __m512| {
        let magnitude = if SIGNED {
            // max(|y|, least) with the sign cleared.
            _mm512_castps_si512(_mm512_range_ps::<0b1011>(y, _mm512_castsi512_ps(least)))
        } else {
            _mm512_max_epi32(_mm512_castps_si512(y), least)
        };
        let key = _mm512_srli_epi32::<24>(magnitude);
        let estimate = _mm512_permutexvar_epi32(key, region);
        let above = _mm512_cmpgt_epi32_mask(magnitude, _mm512_permutexvar_epi32(key, next));
        let region = _mm512_mask_add_epi32(estimate, above, estimate, one);
        let v = _mm512_fmadd_ps(
            _mm512_castsi512_ps(magnitude),
            _mm512_permutexvar_ps(region, alpha),
            one_beta,
        );
        let v = _mm512_castps_si512(_mm512_min_ps(v, clamp));
        let k = if SIGNED {
            _mm512_slli_epi32::<23>(region)
        } else {
            _mm512_permutexvar_epi32(region, k_shifted)
        };
        let w = _mm512_add_epi32(v, k);
        // w | (y & sign): -w for negative y (signed map).
        let w = if SIGNED {
            _mm512_ternarylogic_epi32::<0xf8>(w, _mm512_castps_si512(y), sign_bit)
        } else {
            w
        };
        (w, _mm512_cvttps_epi32(_mm512_castsi512_ps(w)))
    };
    let mut redo = 0u64;
    let mut i = 0;
    while i + 64 <= n {
        // SAFETY: i + 64 <= n, and the caller gives n elements at x and out.
        unsafe {
            let y = |q: usize| _mm512_mul_ps(_mm512_loadu_ps(x.add(i + 16 * q)), splat);
            let ((w0, lo0), (w1, lo1)) = (lane(y(0)), lane(y(1)));
            let ((w2, lo2), (w3, lo3)) = (lane(y(2)), lane(y(3)));
            // The low 16 bits of every w (the high halves are never tested).
            let w = _mm512_max_epu16(_mm512_max_epu16(w0, w1), _mm512_max_epu16(w2, w3));
            let undecided = _mm512_mask_cmpge_epu16_mask(0x5555_5555, w, undecided_from);
            redo |= ((undecided != 0) as u64) << (i / 64);
            // Exact 16-bit lo, offset, then bytes saturated at 0 (a mirrored
            // code below 0 is 0); the packs work within 128-bit lanes.
            let low = _mm512_add_epi16(_mm512_packs_epi32(lo0, lo1), offset);
            let high = _mm512_add_epi16(_mm512_packs_epi32(lo2, lo3), offset);
            let codes = _mm512_permutexvar_epi32(order, _mm512_packus_epi16(low, high));
            _mm512_storeu_si512(out.add(i) as *mut _, codes);
        }
        i += 64;
    }
    (i, redo)
}
