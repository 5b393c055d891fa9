//! The 8-bit codec against plain references written from its rules, on every
//! code boundary, and the SIMD levels against each other, bit for bit.

use crate::kernel_tests::Rng;
use crate::{SimdLevel, StepError};

use super::codec::{blocks, decode, encode, Codebook, BLOCK, SIGNED, UNSIGNED};

/// bitsandbytes' rule, by a linear scan over the 255 neighbouring pairs: the
/// code goes past pair (k, k + 1) when `y` is above its float32 midpoint
/// `(values[k] + values[k + 1]) * 0.5`, or equal to it with k + 1 even.
pub(super) fn reference_code(values: &[f32; 256], y: f32) -> u8 {
    let mut code = 0;
    for k in 0..255 {
        let mid = (values[k] + values[k + 1]) * 0.5;
        if y > mid || (y == mid && (k + 1) % 2 == 0) {
            code = k + 1;
        }
    }
    code as u8
}

/// The nearest code by exact distance (f64), ties to the even code.
fn nearest_by_distance(values: &[f32; 256], y: f32) -> u8 {
    let mut best = 0;
    for k in 1..256 {
        let (d, b) = (
            (y as f64 - values[k] as f64).abs(),
            (y as f64 - values[best] as f64).abs(),
        );
        if d < b || (d == b && k % 2 == 0) {
            best = k;
        }
    }
    best as u8
}

/// A reference block encoder: absmax by comparison (a NaN poisons the
/// block), then each value's code by [`reference_code`] on `x * (1/absmax)`.
/// A block with infinities: its finite values' codes under their own absmax,
/// kept off the end codes, which the infinities take; the absmax negated.
pub(super) fn reference_encode(book: &Codebook, x: &[f32]) -> (Vec<u8>, f32) {
    if x.iter().any(|v| v.is_nan()) {
        return (vec![book.zero; x.len()], f32::NAN);
    }
    if x.iter().any(|v| v.is_infinite()) {
        let finite: Vec<f32> = x
            .iter()
            .map(|&v| if v.is_finite() { v } else { 0.0 })
            .collect();
        let (codes, absmax) = reference_encode(book, &finite);
        let lowest = if book.zero == 127 { 1 } else { 0 };
        let codes = (codes.iter().zip(x))
            .map(|(&c, &v)| match v {
                f32::INFINITY => 255,
                f32::NEG_INFINITY => 0,
                _ => c.clamp(lowest, 254),
            })
            .collect();
        return (codes, -absmax);
    }
    let absmax = x.iter().fold(0f32, |m, v| m.max(v.abs()));
    if absmax == 0.0 {
        return (vec![book.zero; x.len()], 0.0);
    }
    let inv = 1.0 / absmax;
    assert!(
        inv.is_normal(),
        "the reference covers reciprocals in the normal range"
    );
    let codes = x
        .iter()
        .map(|&v| reference_code(&book.values, v * inv))
        .collect();
    (codes, absmax)
}

fn books() -> [(&'static str, &'static Codebook); 2] {
    [("signed", &SIGNED), ("unsigned", &UNSIGNED)]
}

fn next_up(x: f32) -> f32 {
    if x == 0.0 {
        return f32::from_bits(1);
    }
    f32::from_bits(if x > 0.0 {
        x.to_bits() + 1
    } else {
        x.to_bits() - 1
    })
}

fn next_down(x: f32) -> f32 {
    -next_up(-x)
}

/// Every code value, every float32 midpoint, the exact midpoints rounded
/// either way, their float neighbours, the cell boundaries of the encode
/// table, and special values, with both signs.
fn boundary_values(book: &Codebook) -> Vec<f32> {
    let v = &book.values;
    let mut out = vec![
        0.0,
        f32::MIN_POSITIVE,
        1e-45,
        1e-38,
        1.0,
        2.0,
        f32::MAX,
        f32::INFINITY,
    ];
    for &value in v {
        out.extend([value, next_up(value), next_down(value)]);
    }
    for pair in v.windows(2) {
        let mid = (pair[0] + pair[1]) * 0.5;
        let exact = (pair[0] as f64 + pair[1] as f64) / 2.0;
        for m in [
            mid,
            exact as f32,
            next_up(exact as f32),
            next_down(exact as f32),
        ] {
            out.extend([m, next_up(m), next_down(m)]);
        }
    }
    for cell in ((127 - 24) << 7)..=((127 << 7) + 2) {
        let start = f32::from_bits(cell << 16);
        out.extend([
            start,
            next_down(start),
            f32::from_bits((cell << 16) | 0xffff),
        ]);
    }
    let negatives: Vec<f32> = out.iter().map(|x| -x).collect();
    out.extend(negatives);
    out
}

#[test]
fn every_boundary_gets_the_reference_code() {
    for (name, book) in books() {
        for y in boundary_values(book) {
            assert_eq!(
                book.nearest(y),
                reference_code(&book.values, y),
                "{name} map, y = {y:e} ({:#x})",
                y.to_bits()
            );
        }
    }
}

#[test]
fn the_rule_is_nearest_except_between_exact_and_rounded_midpoints() {
    // bitsandbytes compares with float32 midpoints; where one is rounded, a y
    // between it and the exact midpoint is closer to the other code. Count
    // those, and check that every disagreement is one of them.
    for (name, book) in books() {
        let v = &book.values;
        let mut explained = 0;
        for y in boundary_values(book).into_iter().filter(|y| y.abs() <= 1.0) {
            let (ours, nearest) = (book.nearest(y), nearest_by_distance(v, y));
            if ours == nearest {
                continue;
            }
            let (lo, hi) = (ours.min(nearest) as usize, ours.max(nearest) as usize);
            assert_eq!(hi, lo + 1, "{name}: y = {y:e} skips a code");
            let rounded = ((v[lo] + v[hi]) * 0.5) as f64;
            let exact = (v[lo] as f64 + v[hi] as f64) / 2.0;
            let y = y as f64;
            assert!(
                y >= rounded.min(exact) && y <= rounded.max(exact),
                "{name}: y = {y:e} is not between the midpoints {rounded:e} and {exact:e}"
            );
            explained += 1;
        }
        assert!(explained > 0, "{name}: some midpoints are rounded");
    }
}

#[test]
fn a_sweep_of_float32_values_gets_the_reference_code() {
    // Every 4099th bit pattern of both signs, checked by binary search over
    // the float32 midpoints (a different algorithm from the encode table's).
    for (name, book) in books() {
        let v = &book.values;
        let mids: Vec<f32> = (0..255).map(|k| (v[k] + v[k + 1]) * 0.5).collect();
        for bits in (0..0x7f80_0000u32).step_by(4099) {
            for y in [f32::from_bits(bits), -f32::from_bits(bits)] {
                let below = mids.partition_point(|&m| m < y);
                let tie = below < 255 && mids[below] == y && (below + 1) % 2 == 0;
                let want = below + tie as usize;
                assert_eq!(book.nearest(y) as usize, want, "{name}, y = {y:e}");
            }
        }
    }
}

/// Blocks that put boundary values through the block encoder with absmax 1
/// (so `y` = `x` exactly), plus zeros, subnormals and random values.
fn test_data(book: &Codebook, rng: &mut Rng, len: usize) -> Vec<f32> {
    let boundary: Vec<f32> = boundary_values(book)
        .into_iter()
        .filter(|y| y.abs() <= 1.0)
        .collect();
    let mut x: Vec<f32> = rng.vec(len, 1.0);
    for (i, v) in x.iter_mut().enumerate() {
        match i % 7 {
            0 | 3 | 5 => *v = boundary[(i * 31 + 7) % boundary.len()],
            1 => *v *= [1e-6f32, 1e-3, 0.0, -0.0][i / 7 % 4],
            2 => *v = f32::from_bits(rng.next_f64().to_bits() as u32 & 0x807f_ffff),
            _ => {}
        }
    }
    // One ±1 in every block: absmax 1.
    for b in 0..blocks(len) {
        x[b * BLOCK] = if b % 2 == 0 { 1.0 } else { -1.0 };
    }
    x
}

const LENGTHS: [usize; 9] = [1, 7, 255, 256, 257, 1000, 4095, 4096, 4097];

#[test]
fn encode_and_decode_match_the_reference_on_every_level() {
    let mut rng = Rng(7);
    for (name, book) in books() {
        for &len in &LENGTHS {
            let x = test_data(book, &mut rng, len);
            let (mut want_codes, mut want_absmax) = (Vec::new(), Vec::new());
            for block in x.chunks(BLOCK) {
                let (codes, absmax) = reference_encode(book, block);
                want_codes.extend(codes);
                want_absmax.push(absmax);
            }
            let want_out: Vec<f32> = want_codes
                .iter()
                .enumerate()
                .map(|(i, &c)| book.values[c as usize] * want_absmax[i / BLOCK])
                .collect();
            for level in SimdLevel::supported() {
                let mut codes = vec![0xaa; len];
                let mut absmax = vec![-1.0; blocks(len)];
                encode(level, book, &x, &mut codes, &mut absmax).unwrap();
                assert_eq!(codes, want_codes, "{name} {level} len {len}");
                let bits = |a: &[f32]| a.iter().map(|v| v.to_bits()).collect::<Vec<_>>();
                assert_eq!(bits(&absmax), bits(&want_absmax), "{name} {level}");
                let mut out = vec![f32::NAN; len];
                decode(level, book, &codes, &absmax, &mut out).unwrap();
                assert_eq!(bits(&out), bits(&want_out), "{name} {level} len {len}");
            }
        }
    }
}

#[test]
fn special_blocks() {
    for (name, book) in books() {
        for level in SimdLevel::supported() {
            let run = |x: &[f32]| {
                let mut codes = vec![0xaa; x.len()];
                let mut absmax = vec![-1.0; blocks(x.len())];
                encode(level, book, x, &mut codes, &mut absmax).unwrap();
                let mut out = vec![7.0; x.len()];
                decode(level, book, &codes, &absmax, &mut out).unwrap();
                (codes, absmax, out)
            };
            // Zeros of either sign: absmax 0, the code of 0, decoded to +0.
            let (codes, absmax, out) = run(&[0.0, -0.0, 0.0]);
            assert_eq!(
                (codes, absmax),
                (vec![book.zero; 3], vec![0.0]),
                "{name} {level}"
            );
            assert!(out.iter().all(|v| v.to_bits() == 0));
            // A NaN poisons its block (only): absmax NaN, all decoded NaN.
            let mut x = vec![0.5f32; 600];
            x[300] = f32::NAN;
            let (codes, absmax, out) = run(&x);
            assert!(absmax[1].is_nan(), "{name} {level}");
            assert_eq!((absmax[0], absmax[2]), (0.5, 0.5));
            assert!(codes[256..512].iter().all(|&c| c == book.zero));
            assert!(out[256..512].iter().all(|v| v.is_nan()));
            assert!(out[..256].iter().chain(&out[512..]).all(|&v| v == 0.5));
            // An infinity is kept at an end code, its block's absmax negated; the
            // finite values keep off the end codes. The unsigned map stores -inf as
            // it stores every negative value, as 0.
            for (bad, code, back) in [
                (f32::INFINITY, 255, f32::INFINITY),
                (
                    f32::NEG_INFINITY,
                    0,
                    if book.zero == 0 { 0.0 } else { -f32::INFINITY },
                ),
            ] {
                x[300] = bad;
                let (codes, absmax, out) = run(&x);
                assert_eq!(
                    absmax[1].to_bits(),
                    (-0.5f32).to_bits(),
                    "{name} {level} {bad}"
                );
                assert_eq!((absmax[0], absmax[2]), (0.5, 0.5));
                assert_eq!((codes[300], out[300]), (code, back), "{name} {level} {bad}");
                let mut others = (256..512).filter(|&i| i != 300);
                assert!(others.clone().all(|i| codes[i] == 254));
                assert!(others.all(|i| out[i] == book.values[254] * 0.5));
                assert!(out[..256].iter().chain(&out[512..]).all(|&v| v == 0.5));
            }
            // Only infinities and zeros: absmax -0.0.
            let (codes, absmax, out) = run(&[0.0, f32::INFINITY, -0.0]);
            assert_eq!(absmax[0].to_bits(), (-0.0f32).to_bits());
            assert_eq!(codes, vec![book.zero, 255, book.zero]);
            assert_eq!(out, vec![0.0, f32::INFINITY, 0.0]);
            // A value equal to absmax decodes exactly; one far below it, to 0.
            let (codes, absmax, out) = run(&[3.0, 1e-9, 3.0]);
            assert_eq!((codes[0], absmax[0], out[0]), (255, 3.0, 3.0));
            assert_eq!((codes[1], out[1]), (book.zero, 0.0));
        }
    }
}

#[test]
fn codes_do_not_change_when_a_block_is_scaled_by_a_power_of_two() {
    // With a normal reciprocal, x * (1 / absmax) is the same float for x and
    // absmax scaled by 2^k. Blocks with absmax under 2^-126 or over 2^126 are
    // scaled into range first, so they keep the codes too. Values with 8
    // significant bits stay exact down to 2^-141.
    let mut rng = Rng(11);
    for (name, book) in books() {
        let base: Vec<f32> = (0..BLOCK)
            .map(|_| ((rng.next_f64() * 256.0).round() / 256.0) as f32)
            .collect();
        let mut want = vec![0; BLOCK];
        let mut absmax = [0f32];
        encode(SimdLevel::Scalar, book, &base, &mut want, &mut absmax).unwrap();
        for k in (-133..=127).step_by(3) {
            let scale = 2f64.powi(k);
            let x: Vec<f32> = base.iter().map(|&v| (v as f64 * scale) as f32).collect();
            for level in SimdLevel::supported() {
                let mut codes = vec![0; BLOCK];
                let mut got = [0f32];
                encode(level, book, &x, &mut codes, &mut got).unwrap();
                assert_eq!(codes, want, "{name} 2^{k} {level}");
                assert_eq!(got[0] as f64, absmax[0] as f64 * scale);
            }
        }
    }
}

#[test]
fn levels_agree_on_random_blocks_of_every_magnitude() {
    let mut rng = Rng(3);
    let levels = SimdLevel::supported();
    for (name, book) in books() {
        for &len in &[4097usize, 33 * BLOCK + 5] {
            let x: Vec<f32> = (0..len)
                .map(|i| {
                    let e = (i / BLOCK) as i32 % 60 - 40;
                    (rng.next_f64() * 2f64.powi(e)) as f32
                })
                .collect();
            let mut first: Option<(Vec<u8>, Vec<u32>)> = None;
            for &level in &levels {
                let mut codes = vec![0; len];
                let mut absmax = vec![0.0; blocks(len)];
                encode(level, book, &x, &mut codes, &mut absmax).unwrap();
                let got = (codes, absmax.iter().map(|a| a.to_bits()).collect());
                match &first {
                    None => first = Some(got),
                    Some(want) => assert!(*want == got, "{name} {level} len {len}"),
                }
            }
        }
    }
}

/// The error for a buffer of `got` elements where `expected` are needed.
pub(super) fn mismatch(buffer: &'static str, expected: usize, got: usize) -> StepError {
    StepError::LengthMismatch {
        index: 0,
        buffer,
        expected,
        got,
    }
}

#[test]
fn bad_lengths_and_levels_are_errors_that_write_nothing() {
    let x = [0.5f32; 300];
    let mut codes = [9u8; 300];
    let mut absmax = [9f32; 2];
    assert_eq!(
        encode(
            SimdLevel::Scalar,
            &SIGNED,
            &x,
            &mut codes[..299],
            &mut absmax
        ),
        Err(mismatch("codes", 300, 299))
    );
    assert_eq!(
        encode(SimdLevel::Scalar, &SIGNED, &x, &mut codes, &mut absmax[..1]),
        Err(mismatch("absmax", 2, 1))
    );
    let mut out = [9f32; 300];
    assert_eq!(
        decode(SimdLevel::Scalar, &SIGNED, &codes[..10], &absmax, &mut out),
        Err(mismatch("codes", 300, 10))
    );
    assert_eq!(
        decode(SimdLevel::Scalar, &SIGNED, &codes, &absmax[..1], &mut out),
        Err(mismatch("absmax", 2, 1))
    );
    if let Some(&missing) = SimdLevel::ALL.iter().find(|l| !l.is_supported()) {
        assert_eq!(
            encode(missing, &SIGNED, &x, &mut codes, &mut absmax),
            Err(StepError::UnsupportedSimd(missing.name()))
        );
    }
    assert!(codes.iter().all(|&c| c == 9) && absmax == [9.0; 2] && out == [9.0; 300]);
}

/// The codes of `ys` (each in [-1, 1]) at `level`: each block holds 255 of
/// them and a 1, so its absmax is 1 and `y * (1 / absmax)` is `y` itself.
fn codes_of(level: SimdLevel, book: &Codebook, ys: &[f32]) -> Vec<u8> {
    let mut x = Vec::with_capacity(ys.len() + ys.len() / 255 + 1);
    for chunk in ys.chunks(255) {
        x.push(1.0);
        x.extend_from_slice(chunk);
    }
    let mut codes = vec![0; x.len()];
    let mut absmax = vec![0f32; blocks(x.len())];
    encode(level, book, &x, &mut codes, &mut absmax).unwrap();
    assert!(absmax.iter().all(|&a| a == 1.0));
    (codes.chunks(BLOCK))
        .flat_map(|block| block[1..].iter().copied())
        .collect()
}

#[test]
fn every_y_in_the_unit_interval_takes_the_reference_code_at_every_level() {
    // Every float32 y in [-1, 1] in increasing order (a release build walks all
    // 2^31 of them; a debug build every 1021st bit pattern and the 64 on either
    // side of every midpoint), against the reference rule by a merge walk:
    // the count of midpoints below y, plus one where y is a midpoint whose
    // upper code is even.
    let stride = if cfg!(debug_assertions) { 1021 } else { 1 };
    for (name, book) in books() {
        let mids: Vec<f32> = (0..255)
            .map(|k| (book.values[k] + book.values[k + 1]) * 0.5)
            .collect();
        // The magnitudes' bit patterns: the sample, then every midpoint's neighbourhood.
        let mut bits: Vec<u32> = (0..=0x3f80_0000u32).step_by(stride).collect();
        if stride > 1 {
            for m in &mids {
                let b = m.to_bits() & 0x7fff_ffff;
                bits.extend(b.saturating_sub(64)..=(b + 64).min(0x3f80_0000));
            }
            bits.push(0x3f80_0000);
            bits.sort_unstable();
            bits.dedup();
        }
        // Increasing y: the negatives from -1 up, then the positives.
        let order = (bits.iter().rev().map(|&b| b | 0x8000_0000)).chain(bits.iter().copied());
        let levels = SimdLevel::supported();
        let mut below = 0; // midpoints below y
        let mut ys = Vec::with_capacity(1 << 20);
        let mut want = Vec::with_capacity(1 << 20);
        let check = |ys: &mut Vec<f32>, want: &mut Vec<u8>| {
            for &level in &levels {
                let got = codes_of(level, book, ys);
                if let Some(i) = (0..ys.len()).find(|&i| got[i] != want[i]) {
                    panic!(
                        "{name} {level}: y = {:e} ({:#x}) got {} want {}",
                        ys[i],
                        ys[i].to_bits(),
                        got[i],
                        want[i]
                    );
                }
            }
            ys.clear();
            want.clear();
        };
        for b in order {
            let y = f32::from_bits(b);
            while below < 255 && mids[below] < y {
                below += 1;
            }
            let tie = below < 255 && mids[below] == y && (below + 1) % 2 == 0;
            ys.push(y);
            want.push((below + tie as usize) as u8);
            if ys.len() == 1 << 20 {
                check(&mut ys, &mut want);
            }
        }
        check(&mut ys, &mut want);
    }
}

#[test]
fn every_code_decodes_to_its_value_times_absmax_at_every_level() {
    // Every code at every position of a block (the codes rotate by one per
    // block), under absmax values of several magnitudes, against the map
    // read directly: the vector levels' lookups (AVX-512 VBMI's byte planes
    // among them, 64 codes at a time) and their tails.
    let absmax = [1.0f32, 0.37, 3.1e-5, 2.5e7, 1.0e-30];
    let len = absmax.len() * BLOCK - 7;
    let codes: Vec<u8> = (0..len).map(|i| (i + i / BLOCK) as u8).collect();
    for (name, book) in books() {
        for level in SimdLevel::supported() {
            let mut out = vec![0f32; len];
            decode(level, book, &codes, &absmax, &mut out).unwrap();
            for (i, (&c, &got)) in codes.iter().zip(&out).enumerate() {
                let want = book.values[c as usize] * absmax[i / BLOCK];
                assert_eq!(
                    got.to_bits(),
                    want.to_bits(),
                    "{name} {level}: element {i}, code {c}"
                );
            }
        }
    }
}
