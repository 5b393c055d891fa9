//! The arithmetic encoder on its own, lane by lane, against the linear-scan
//! reference: every value it decides must get the reference code, on the
//! one-lane model and on every vector level this CPU has; and it must decide
//! nearly all of them. An ignored test runs every float32 of the domain.

use crate::SimdLevel;

use super::codec::{run, Codebook, Job, SIGNED, UNSIGNED};
use super::codec_tests::reference_code;
use super::decades::{fma, Loaded, GUARD, INDEX_BITS_FROM};
use super::lanes::{Lanes, Scalar};

/// Codes by [`Loaded::code`], and whether each was decided.
struct Codes<'a> {
    signed: bool,
    book: &'a Codebook,
    y: &'a [f32],
}

impl Job for Codes<'_> {
    type Out = Vec<Option<u8>>;
    unsafe fn run<L: Lanes>(self) -> Vec<Option<u8>> {
        // SAFETY: `L`'s level is enabled, as this function's contract requires.
        unsafe {
            if self.signed {
                codes::<L, true>(self.book, self.y)
            } else {
                codes::<L, false>(self.book, self.y)
            }
        }
    }
}

#[inline(always)]
unsafe fn codes<L: Lanes, const SIGNED: bool>(book: &Codebook, y: &[f32]) -> Vec<Option<u8>> {
    // SAFETY: `L`'s level is enabled, as this function's contract requires; each load reads
    // SAFETY: `L::N` values of a chunk of `L::N`, and each store writes `L::N` lanes of
    // SAFETY: 16-lane buffers.
    unsafe {
        let decades = Loaded::<L, SIGNED>::new(book.decades());
        let mut out = Vec::with_capacity(y.len());
        let (mut code, mut v) = ([0u8; 16], [0u32; 16]);
        for chunk in y.chunks_exact(L::N) {
            let (c, w) = decades.code(L::bits(L::load(chunk.as_ptr())));
            L::store_bytes(code.as_mut_ptr(), c);
            L::store(v.as_mut_ptr() as *mut f32, L::from_bits(w));
            for k in 0..L::N {
                let decided = (v[k] & 0xffff) < (1 << INDEX_BITS_FROM) - GUARD;
                out.push(decided.then_some(code[k]));
            }
        }
        out
    }
}

fn books() -> [(&'static str, bool, &'static Codebook); 2] {
    [("signed", true, &SIGNED), ("unsigned", false, &UNSIGNED)]
}

/// The domain's largest magnitude.
const LARGEST: f32 = 1.0 + f32::EPSILON;

/// `x` moved by `k` units in the last place (towards +infinity for k > 0).
fn ulps(x: f32, k: i32) -> f32 {
    f32::from_bits((x.to_bits() as i64 + k as i64).clamp(0, LARGEST.to_bits() as i64) as u32)
}

/// Every midpoint and code value with 24 floats either side, and every
/// 40009th float32 of the domain, with both signs (a multiple of 16 values).
fn values(book: &Codebook) -> Vec<f32> {
    let v = &book.values;
    let mut out = Vec::new();
    for k in 0..256 {
        let mut centres = vec![v[k].abs()];
        if k > 0 {
            centres.push(((v[k - 1] + v[k]) * 0.5).abs());
        }
        for c in centres {
            out.extend((-24..=24).map(|d| ulps(c, d)));
        }
    }
    out.extend((0..=LARGEST.to_bits()).step_by(40009).map(f32::from_bits));
    out.push(LARGEST);
    let negatives: Vec<f32> = out.iter().map(|x| -x).collect();
    out.extend(negatives);
    out.resize(out.len().next_multiple_of(16), 0.0);
    out
}

/// The codes of `y` at `level` agree with `want` wherever decided; returns
/// how many were undecided.
fn check(
    level: SimdLevel,
    name: &str,
    signed: bool,
    book: &Codebook,
    y: &[f32],
    want: impl Fn(f32) -> u8,
) -> usize {
    let got = run(level, Codes { signed, book, y }).unwrap();
    let mut undecided = 0;
    for (&y, got) in y.iter().zip(got) {
        match got {
            Some(code) => assert_eq!(
                code,
                want(y),
                "{name} {level}: y = {y:e} ({:#x})",
                y.to_bits()
            ),
            None => undecided += 1,
        }
    }
    undecided
}

#[test]
fn decided_codes_are_the_reference_codes_and_nearly_all_are_decided() {
    for (name, signed, book) in books() {
        let y = values(book);
        // The one-lane model, then each level's own lanes.
        // SAFETY: the scalar lanes are plain Rust.
        let model = unsafe {
            Codes {
                signed,
                book,
                y: &y,
            }
            .run::<Scalar>()
        };
        for level in SimdLevel::supported() {
            let reference = |y| reference_code(&book.values, y);
            let undecided = check(level, name, signed, book, &y, reference);
            let got = run(
                level,
                Codes {
                    signed,
                    book,
                    y: &y,
                },
            )
            .unwrap();
            assert!(
                got == model,
                "{name} {level}: the same decisions as one lane"
            );
            // The values crowd the midpoints: still, most are decided.
            let total = y.len();
            assert!(
                undecided * 3 < total,
                "{name} {level}: {undecided} of {total} undecided"
            );
        }
        // Sweeps of bit patterns and of evenly spaced values, against the
        // table encoder (which the codec tests hold to the reference): almost
        // every value decided.
        let mut sweep: Vec<f32> = (0..=LARGEST.to_bits())
            .step_by(1021)
            .map(f32::from_bits)
            .collect();
        sweep.extend((0..1 << 20).map(|k| k as f32 / (1 << 20) as f32));
        let sweep = &sweep[..sweep.len() / 16 * 16];
        let table = |y| book.nearest(y);
        let undecided = check(SimdLevel::detect(), name, signed, book, sweep, table);
        let total = sweep.len();
        assert!(
            undecided * 1000 < total,
            "{name}: {undecided} of {total} undecided in the sweep"
        );
    }
}

#[test]
#[ignore = "every float32 of [-1 - 2^-23, 1 + 2^-23], about a minute per map in release builds"]
fn every_float_of_the_domain_gets_the_reference_code_where_decided() {
    // The table encoder is held to the reference on every boundary by the
    // codec tests; here the arithmetic one is held to the table.
    for (name, signed, book) in books() {
        let mut y = vec![0f32; 1 << 20];
        let mut bits = 0u32;
        while bits <= LARGEST.to_bits() {
            for (k, v) in y.iter_mut().enumerate() {
                let b = (bits + (k as u32 >> 1)).min(LARGEST.to_bits());
                *v = if k % 2 == 0 {
                    f32::from_bits(b)
                } else {
                    -f32::from_bits(b)
                };
            }
            bits += y.len() as u32 / 2;
            let got = run(
                SimdLevel::detect(),
                Codes {
                    signed,
                    book,
                    y: &y,
                },
            )
            .unwrap();
            for (&v, got) in y.iter().zip(got) {
                if let Some(code) = got {
                    assert_eq!(
                        code,
                        book.nearest(v),
                        "{name}: y = {v:e} ({:#x})",
                        v.to_bits()
                    );
                }
            }
        }
    }
}

#[test]
fn const_fma_rounds_once() {
    // The sum lands exactly halfway between two float32 in f64 while the exact
    // value is just past it: rounding the f64 sum again would go to even.
    let a = 1.0 + 2f32.powi(-12);
    let tiny = 2f32.powi(-100);
    let twice = ((a as f64 * a as f64 + tiny as f64) as f32).to_bits();
    assert_ne!(
        twice,
        a.mul_add(a, tiny).to_bits(),
        "a double-rounding case"
    );
    for c in [tiny, -tiny] {
        assert_eq!(
            fma(a, a, c).to_bits(),
            a.mul_add(a, c).to_bits(),
            "c = {c:e}"
        );
    }
    let mut state = 0x2545_f491_4f6c_dd1du64;
    let mut next = || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    for i in 0..1_000_000u32 {
        let r = next();
        // Products and addends of nearby magnitude (where the sum is
        // inexact in f64 most often), and of any.
        let a = f32::from_bits(0x3e00_0000 + (r as u32 & 0x01ff_ffff));
        let b = f32::from_bits(0x3f00_0000 + ((r >> 32) as u32 & 0x00ff_ffff));
        let c = if i % 2 == 0 {
            -f32::from_bits(0x3e80_0000 + ((r >> 8) as u32 & 0x00ff_ffff))
        } else {
            f32::from_bits((r >> 24) as u32)
        };
        if c.is_finite() {
            let want = a.mul_add(b, c);
            assert_eq!(
                fma(a, b, c).to_bits(),
                want.to_bits(),
                "{a:e} * {b:e} + {c:e}"
            );
        }
    }
}
