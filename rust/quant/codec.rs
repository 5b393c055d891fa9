//! Blockwise 8-bit encode and decode, as bitsandbytes' blockwise dynamic
//! quantization stores optimizer state: blocks of [`BLOCK`] consecutive
//! elements (block 0 starts at element 0), each with one float32 `absmax`,
//! and one byte per element indexing a [`Codebook`].
//!
//! * decode: `values[code] * absmax`.
//! * encode: `absmax` is the largest `|x|` of the block; each `x` becomes the
//!   code nearest to `y = x * (1 / absmax)` (the reciprocal rounded once per
//!   block, as bitsandbytes' `quantize_blockwise` does on CPU and CUDA).
//!   "Nearest" is decided as bitsandbytes' CUDA kernels decide it: against the
//!   float32 midpoint `(values[k] + values[k + 1]) * 0.5` of each neighbouring
//!   pair, a `y` equal to a midpoint going to the even code of the pair.
//! * A block of zeros has absmax 0 and the code of 0. A block holding a NaN
//!   has absmax NaN (so the whole block decodes to NaN: the NaN is not
//!   silently dropped) and the code of 0.
//! * A block holding an infinity (and no NaN) keeps it, as float32 state
//!   does (a second moment whose finite gradient's square overflows is +inf,
//!   and that element's update 0): its absmax is stored negated, `-A` (`A`
//!   the largest finite `|x|`, -0.0 when there is none); `+inf` takes the top
//!   code 255 and `-inf` the bottom code 0, and the finite values take their
//!   codes under `A` kept off those (signed map: 1..=254; unsigned: 0..=254).
//!   Decoding a block whose absmax has its sign bit set gives `+inf` for code
//!   255, `-inf` for the signed map's code 0, and `values[code] * |absmax|`
//!   for the others.
//! * Where `1 / absmax` would leave the normal range (absmax under 2^-126 or
//!   over 2^126), `x` and `absmax` are first scaled by an exact power of two,
//!   so the codes are those of the same rule with an unbounded exponent.
//!
//! Encode finds the nearest code by arithmetic (`decades`): `|y|`'s region
//! (a decade, or the codes of 0 and 1) from its exponent, the code below
//! from one fused multiply-add and a truncation, and one comparison with
//! the largest `|y|` of that code (a float32 midpoint, ties to the even
//! code) to settle which side. Negative `y` in the signed map take the
//! mirrored code (the map's negative half is the exact negation of its
//! positive half). The vector levels first skip that comparison, which the
//! arithmetic alone decides for nearly every value and says where it
//! cannot; a group of 64 values with such a value goes through the
//! comparison again. AVX-512 with BW and DQ runs the arithmetic in a loop of
//! its own (`decades::encode_avx512`). The scalar level (and the vector
//! levels' last few values) looks the code of `|y|`'s cell up instead (a
//! cell is 1/128 of a binary octave, narrower than any code's range of
//! `|y|`) and settles it with the same comparison.

use crate::error::StepError;
use crate::simd::SimdLevel;

use super::decades::{Decades, Loaded, GUARD, INDEX_BITS_FROM};
pub(super) use super::lanes::Job;
use super::lanes::{Lanes, Scalar};
use super::map;

/// Elements per block, each block with one absmax.
pub const BLOCK: usize = crate::storage::Q8_BLOCK;

/// The number of blocks (and absmax values) of a tensor of `len` elements.
pub const fn blocks(len: usize) -> usize {
    len.div_ceil(BLOCK)
}

/// A quantization map with what encoding needs.
pub struct Codebook {
    /// The value of each code, increasing.
    pub values: [f32; 256],
    /// Byte `b` of `values[c]`'s bits at `planes[b][c]` (for byte permutes).
    pub(super) planes: [[u8; 256]; 4],
    /// Per code `c`: the bits of the largest `|y|` whose code is `c` (one
    /// below the next midpoint's, or at it where that midpoint goes to `c`,
    /// the even code); `i32::MAX` for code 255.
    upper: [u32; 256],
    /// Whether negative `y` take the mirrored code of `|y|` (the signed
    /// map) rather than the code of 0.
    mirrors: bool,
    /// The code of 0.
    pub zero: u8,
    /// The arithmetic search the vector levels try first.
    decades: Decades,
    /// The scalar level's search: per cell of `|y|` (its bits >> 16, from
    /// [`CELL_FROM`]; the cell of 0 holds every smaller `|y|`), the code of
    /// its least `|y|`; the code of a `|y|` in it is that or the next (no
    /// cell holds two midpoints), by one comparison with `upper`.
    cells: [u8; CELLS],
}

/// `|y|`'s bits >> 16 at the first cell (2^-31; smaller `|y|` take the code of 0).
const CELL_FROM: u32 = 96 << 7;
/// Cells up to `|y| < 2`.
const CELLS: usize = 32 << 7;

/// The code of a `|y|` (its bits) not above 1 + 2^-23: the least code from
/// `zero` whose `upper` is at least it.
const fn code_of_magnitude(upper: &[u32; 256], zero: usize, bits: u32) -> usize {
    let (mut lo, mut hi) = (zero, 255);
    while lo < hi {
        let mid = (lo + hi) / 2;
        if upper[mid] >= bits {
            hi = mid;
        } else {
            lo = mid + 1;
        }
    }
    lo
}

/// The signed map (first moment, velocity).
pub static SIGNED: Codebook = Codebook::new(&map::SIGNED, true);
/// The unsigned map (second moment, AMSGrad's max, AdaMax's norm).
pub static UNSIGNED: Codebook = Codebook::new(&map::UNSIGNED, false);

impl Codebook {
    const fn new(values: &[f32; 256], mirrors: bool) -> Self {
        let mut upper = [i32::MAX as u32; 256];
        let mut zero = 0;
        let mut k = 0;
        while k < 255 {
            let mid = (values[k] + values[k + 1]) * 0.5;
            // y == midpoint goes to the even code of the pair: k when k is even.
            upper[k] = mid.to_bits() - (k % 2) as u32;
            if values[k + 1] == 0.0 {
                zero = k + 1;
            }
            k += 1;
        }
        let mut cells = [0u8; CELLS];
        let mut cell = 0;
        while cell < CELLS {
            let first = (CELL_FROM + cell as u32) << 16;
            let least = if cell == 0 { 0 } else { first };
            let end = first + (1 << 16) - 1;
            // |y| is at most 1 + 2^-23.
            let largest = if end > 0x3f80_0001 { 0x3f80_0001 } else { end };
            let code = code_of_magnitude(&upper, zero, least);
            assert!(code_of_magnitude(&upper, zero, largest) <= code + 1);
            cells[cell] = code as u8;
            cell += 1;
        }
        let mut planes = [[0u8; 256]; 4];
        let mut c = 0;
        while c < 256 {
            let bits = values[c].to_bits();
            let mut b = 0;
            while b < 4 {
                planes[b][c] = (bits >> (8 * b)) as u8;
                b += 1;
            }
            c += 1;
        }
        Codebook {
            values: *values,
            planes,
            upper,
            mirrors,
            zero: zero as u8,
            decades: Decades::new(values, zero),
            cells,
        }
    }

    /// Whether negative values take mirrored codes (the signed map).
    pub(super) fn mirrors(&self) -> bool {
        self.mirrors
    }

    pub(super) fn decades(&self) -> &Decades {
        &self.decades
    }

    /// The code of one value `y` (already multiplied by its block's 1 / absmax;
    /// not NaN: a block holding one is poisoned before any value is encoded).
    pub fn nearest(&self, y: f32) -> u8 {
        let mut code = 0;
        // Every |y| from 1 up has the code of 1 (or, negative, of -1 or 0):
        // the encoder's arithmetic covers |y| up to 1 + 2^-23.
        let y = y.clamp(-1.0, 1.0);
        encode_scalar(self, &[y], 1.0, std::slice::from_mut(&mut code));
        code
    }
}

/// A map's block encoder at level `L` (`SIGNED`: the book mirrors negative
/// values), with the arithmetic search's tables loaded once.
pub(super) struct Encoder<'a, L: Lanes, const SIGNED: bool> {
    book: &'a Codebook,
    decades: Loaded<L, SIGNED>,
}

impl<'a, L: Lanes, const SIGNED: bool> Encoder<'a, L, SIGNED> {
    /// # Safety
    /// `L`'s level must be enabled; `SIGNED` must say whether `book` mirrors.
    #[inline(always)]
    pub(super) unsafe fn new(book: &'a Codebook) -> Self {
        // SAFETY: `L`'s level is enabled, as this function's contract requires; `book`
        // SAFETY: outlives the encoder that holds its tables.
        unsafe {
            debug_assert_eq!(book.mirrors(), SIGNED);
            Encoder {
                book,
                decades: Loaded::new(book.decades()),
            }
        }
    }

    /// Encode one block (at most [`BLOCK`] values); returns its absmax.
    ///
    /// # Safety
    /// `L`'s level must be enabled.
    #[inline(always)]
    pub(super) unsafe fn block(&self, x: &[f32], codes: &mut [u8]) -> f32 {
        // SAFETY: `L`'s level is enabled, as this function's contract requires.
        unsafe { self.block_with(x, abs_max_bits::<L>(x), codes) }
    }

    /// [`Encoder::block`] given the block's largest `|x|` as bits (a NaN's
    /// above every number's), as a caller that has reduced it passes it.
    ///
    /// # Safety
    /// `L`'s level must be enabled.
    #[inline(always)]
    pub(super) unsafe fn block_with(&self, x: &[f32], bits: u32, codes: &mut [u8]) -> f32 {
        // SAFETY: `L`'s level is enabled, as this function's contract requires.
        unsafe {
            if bits == 0 {
                codes.fill(self.book.zero);
                return 0.0;
            }
            if bits >= INFINITY_BITS {
                return encode_nonfinite(self.book, x, codes);
            }
            let absmax = f32::from_bits(bits);
            if RECIPROCAL_NORMAL.contains(&bits) {
                self.scaled(x, 1.0 / absmax, codes);
            } else {
                encode_rescaled(self.book, x, absmax, codes);
            }
            absmax
        }
    }

    /// `codes[i]` = the code of `x[i] * scale` (`|x[i] * scale| <= 1 + 2^-23`).
    #[inline(always)]
    unsafe fn scaled(&self, x: &[f32], scale: f32, codes: &mut [u8]) {
        // SAFETY: `L`'s level is enabled, as this function's contract requires; every access
        // SAFETY: is below `n`, the length of both `x` and `codes`, and `encode_run` and
        // SAFETY: `settle` get that `n`.
        unsafe {
            let n = x.len().min(codes.len());
            let (x, out) = (x.as_ptr(), codes.as_mut_ptr());
            let mut i = 0;
            if L::N > 1 {
                // By arithmetic; then each group of 4 vectors with an undecided
                // lane again, with the comparison.
                let splat = L::splat(scale);
                let y = |i: usize| L::bits(L::mul(L::load(x.add(i)), splat));
                const { assert!(INDEX_BITS_FROM == 16 && BLOCK <= 64 * 4 * 2) };
                let decades = self.book.decades();
                let (done, mut redo) = L::encode_run(decades, SIGNED, x, scale, out, n);
                i = done;
                let mut group = done / (4 * L::N);
                while i + 4 * L::N <= n {
                    let (c0, u0) = self.decades.code(y(i));
                    let (c1, u1) = self.decades.code(y(i + L::N));
                    let (c2, u2) = self.decades.code(y(i + 2 * L::N));
                    let (c3, u3) = self.decades.code(y(i + 3 * L::N));
                    let undecided = L::max_low16(L::max_low16(u0, u1), L::max_low16(u2, u3));
                    let undecided =
                        L::any_low16_at_least(undecided, (1 << INDEX_BITS_FROM) - GUARD);
                    redo |= (undecided as u64) << group;
                    L::store_bytes4(out.add(i), c0, c1, c2, c3);
                    group += 1;
                    i += 4 * L::N;
                }
                if redo == 0 && i == n {
                    return;
                }
                let book = self.book;
                return L::framed(Settle::<SIGNED> {
                    book,
                    x,
                    scale,
                    out,
                    redo,
                    group: 4 * L::N,
                    tail: i,
                    n,
                });
            }
            settle_scalar(self.book, x, scale, out, i, n)
        }
    }
}

/// `out[j]` = the code of `x[j] * scale` for `j` in `i..n`, one at a time
/// by [`Codebook::cells`] and one comparison.
#[inline(always)]
unsafe fn settle_scalar(
    book: &Codebook,
    x: *const f32,
    scale: f32,
    out: *mut u8,
    i: usize,
    n: usize,
) {
    // SAFETY: the caller gives `x` and `out` valid for `n` elements, and
    // SAFETY: the cell index is below `CELLS`, `c` (a `u8`) below 256.
    unsafe {
        for j in i..n {
            let y = (*x.add(j) * scale).to_bits();
            let magnitude = y & 0x7fff_ffff;
            let cell = ((magnitude >> 16).saturating_sub(CELL_FROM) as usize).min(CELLS - 1);
            let c = book.cells[cell];
            let c = c + (magnitude > book.upper[c as usize]) as u8;
            *out.add(j) = if y >> 31 == 0 {
                c
            } else if book.mirrors {
                // 254 - c, at least 0 (255, the code of 1, mirrors to 0).
                254u8.saturating_sub(c)
            } else {
                book.zero
            };
        }
    }
}

/// The exact codes of an [`Encoder`]'s undecided groups and its tail, in a
/// frame of their own (they are rare: the vector loop stays small).
struct Settle<'a, const SIGNED: bool> {
    book: &'a Codebook,
    x: *const f32,
    scale: f32,
    out: *mut u8,
    /// Bit `g`: group `g` (elements from `g * group`) is undecided.
    redo: u64,
    group: usize,
    /// The elements from `tail` to `n` are not encoded yet.
    tail: usize,
    n: usize,
}

impl<const SIGNED: bool> Job for Settle<'_, SIGNED> {
    type Out = ();
    #[inline(always)]
    unsafe fn run<L: Lanes>(self) {
        // SAFETY: `L`'s level is enabled, as this function's contract requires; the groups and
        // SAFETY: the tail are inside the `n` elements the encoder was given.
        unsafe {
            let decades = Loaded::<L, SIGNED>::new(self.book.decades());
            let (book, x, scale, out) = (self.book, self.x, self.scale, self.out);
            let mut redo = self.redo;
            while redo != 0 {
                let start = redo.trailing_zeros() as usize * self.group;
                settle(&decades, book, x, scale, out, start, start + self.group);
                redo &= redo - 1;
            }
            settle(&decades, book, x, scale, out, self.tail, self.n)
        }
    }
}

/// `out[j]` = the code of `x[j] * scale` for `j` in `i..n`, each settled
/// by its comparison.
#[inline(always)]
unsafe fn settle<L: Lanes, const SIGNED: bool>(
    decades: &Loaded<L, SIGNED>,
    book: &Codebook,
    x: *const f32,
    scale: f32,
    out: *mut u8,
    mut i: usize,
    n: usize,
) {
    // SAFETY: `L`'s level is enabled, as this function's contract requires; the caller gives
    // SAFETY: `x` and `out` valid for `n` elements, every access below `n`.
    unsafe {
        let upper = book.upper.as_ptr();
        let splat = L::splat(scale);
        // A macro, not a closure: a closure is compiled without the level's
        // target features, and would call each intrinsic out of line.
        macro_rules! code {
            ($i:expr) => {
                decades.exact(L::bits(L::mul(L::load(x.add($i)), splat)), upper)
            };
        }
        while i + 4 * L::N <= n {
            let (a, b, c, d) = (
                code!(i),
                code!(i + L::N),
                code!(i + 2 * L::N),
                code!(i + 3 * L::N),
            );
            L::store_bytes4(out.add(i), a, b, c, d);
            i += 4 * L::N;
        }
        while i + L::N <= n {
            L::store_bytes(out.add(i), code!(i));
            i += L::N;
        }
        settle_scalar(book, x, scale, out, i, n)
    }
}

/// Encode one block (at most [`BLOCK`] values) at level `L`, given its
/// largest `|x|` as bits (see [`Encoder::block_with`]); returns its absmax.
/// The encoder runs in a frame of its own (one per level and map), so a
/// caller that encodes several moments holds no copy of its locals.
///
/// # Safety
/// `L`'s level must be enabled and supported by the CPU.
#[inline(always)]
pub(super) unsafe fn encode_block<L: Lanes>(
    book: &Codebook,
    x: &[f32],
    bits: u32,
    codes: &mut [u8],
) -> f32 {
    // SAFETY: `L`'s level is enabled, as this function's contract requires.
    unsafe {
        if book.mirrors() {
            L::framed(EncodeBlock::<true> {
                book,
                x,
                bits,
                codes,
            })
        } else {
            L::framed(EncodeBlock::<false> {
                book,
                x,
                bits,
                codes,
            })
        }
    }
}

struct EncodeBlock<'a, const SIGNED: bool> {
    book: &'a Codebook,
    x: &'a [f32],
    bits: u32,
    codes: &'a mut [u8],
}

impl<const SIGNED: bool> Job for EncodeBlock<'_, SIGNED> {
    type Out = f32;
    #[inline(always)]
    unsafe fn run<L: Lanes>(self) -> f32 {
        // SAFETY: `L`'s level is enabled, as this function's contract requires.
        unsafe { Encoder::<L, SIGNED>::new(self.book).block_with(self.x, self.bits, self.codes) }
    }
}

/// `codes[i]` = the code of `x[i] * scale`, one lane at a time.
fn encode_scalar(book: &Codebook, x: &[f32], scale: f32, codes: &mut [u8]) {
    // SAFETY: the scalar lanes are plain Rust.
    unsafe {
        if book.mirrors() {
            Encoder::<Scalar, true>::new(book).scaled(x, scale, codes)
        } else {
            Encoder::<Scalar, false>::new(book).scaled(x, scale, codes)
        }
    }
}

/// The largest `|x|`, as bits (a NaN's bits are above every number's).
#[inline(always)]
pub(super) unsafe fn abs_max_bits<L: Lanes>(x: &[f32]) -> u32 {
    // SAFETY: `L`'s level is enabled, as this function's contract requires; each load reads
    // SAFETY: `L::N` elements ending at most at `x.len()`.
    unsafe {
        let n = x.len();
        let magnitude = L::splat_u(0x7fff_ffff);
        let (mut acc0, mut acc1) = (L::splat_u(0), L::splat_u(0));
        let mut i = 0;
        while i + 2 * L::N <= n {
            let p = x.as_ptr().add(i);
            acc0 = L::max(acc0, L::and(L::bits(L::load(p)), magnitude));
            acc1 = L::max(acc1, L::and(L::bits(L::load(p.add(L::N))), magnitude));
            i += 2 * L::N;
        }
        let mut m = L::reduce_max(L::max(acc0, acc1));
        for v in &x[i..] {
            m = m.max(v.to_bits() & 0x7fff_ffff);
        }
        m
    }
}

const INFINITY_BITS: u32 = 0x7f80_0000;
/// Absmax bits whose reciprocal is a normal float: [2^-126, 2^126].
const RECIPROCAL_NORMAL: std::ops::RangeInclusive<u32> = 0x0080_0000..=0x7e80_0000;

/// [`Encoder::block`] for an absmax whose reciprocal is not a normal float:
/// scale by 2^64 (or 2^-64) first. The scaling is exact for every value
/// whose code it can change (the others are far below the smallest midpoint).
#[cold]
#[inline(never)]
fn encode_rescaled(book: &Codebook, x: &[f32], absmax: f32, codes: &mut [u8]) {
    let factor = if absmax < 1.0 {
        2f32.powi(64)
    } else {
        2f32.powi(-64)
    };
    let mut scaled = [0f32; BLOCK];
    let scaled = &mut scaled[..x.len()];
    for (s, &v) in scaled.iter_mut().zip(x) {
        *s = v * factor;
    }
    encode_scalar(book, scaled, 1.0 / (absmax * factor), codes);
}

/// Encode a block holding a NaN or an infinity (see the module doc): the
/// ordinary rule for its finite values under their own absmax, then the
/// infinities at the end codes; returns the absmax as stored.
#[cold]
#[inline(never)]
fn encode_nonfinite(book: &Codebook, x: &[f32], codes: &mut [u8]) -> f32 {
    if x.iter().any(|v| v.is_nan()) {
        codes.fill(book.zero);
        return f32::NAN;
    }
    let mut finite = [0f32; BLOCK];
    let finite = &mut finite[..x.len()];
    for (f, &v) in finite.iter_mut().zip(x) {
        *f = if v.is_finite() { v } else { 0.0 };
    }
    // SAFETY: the scalar lanes are plain Rust.
    let absmax = unsafe {
        if book.mirrors() {
            Encoder::<Scalar, true>::new(book).block(finite, codes)
        } else {
            Encoder::<Scalar, false>::new(book).block(finite, codes)
        }
    };
    let lowest = book.mirrors() as u8;
    for (c, &v) in codes.iter_mut().zip(x) {
        *c = match v {
            f32::INFINITY => 255,
            f32::NEG_INFINITY => 0,
            _ => (*c).clamp(lowest, 254),
        };
    }
    -absmax
}

/// Whether a block's stored absmax says it holds infinities (its sign bit).
#[inline(always)]
pub(super) fn holds_infinities(absmax: f32) -> bool {
    absmax.is_sign_negative()
}

/// [`decode_block`] for a block whose absmax has its sign bit set.
#[cold]
#[inline(never)]
fn decode_with_infinities(book: &Codebook, codes: &[u8], absmax: f32, out: &mut [f32]) {
    let scale = absmax.abs();
    for (o, &c) in out.iter_mut().zip(codes) {
        let end = c == 255 || (c == 0 && book.mirrors());
        // values[255] is 1 and the signed map's values[0] is -1; a NaN absmax stays NaN.
        let scale = if end && !absmax.is_nan() {
            f32::INFINITY
        } else {
            scale
        };
        *o = book.values[c as usize] * scale;
    }
}

/// Decode one block: `out[i] = values[codes[i]] * absmax` (for a block
/// without infinities).
#[inline(always)]
pub(super) unsafe fn decode_block<L: Lanes>(
    book: &Codebook,
    codes: &[u8],
    absmax: f32,
    out: &mut [f32],
) {
    // SAFETY: `L`'s level is enabled, as this function's contract requires; `decode_run`
    // SAFETY: and the loop write below `n`, the length of `codes` and `out`.
    unsafe {
        if holds_infinities(absmax) {
            return decode_with_infinities(book, codes, absmax, out);
        }
        let n = out.len().min(codes.len());
        let table = book.values.as_ptr();
        let mut i = L::decode_run(&book.planes, codes.as_ptr(), absmax, out.as_mut_ptr(), n);
        while i + L::N <= n {
            let v = L::lookup(table, codes.as_ptr().add(i));
            L::store(out.as_mut_ptr().add(i), L::mul(v, L::splat(absmax)));
            i += L::N;
        }
        while i < n {
            out[i] = book.values[codes[i] as usize] * absmax;
            i += 1;
        }
    }
}

/// NEON has no gather: the one-lane code, compiled for NEON (its other loops
/// vectorize). A frame of its own, as `Lanes::framed` makes them.
#[cfg(target_arch = "aarch64")]
#[target_feature(enable = "neon")]
#[inline(never)]
unsafe fn run_neon<J: Job>(job: J) -> J::Out {
    job.run::<Scalar>()
}

/// Run `job` at `level`, an error if this CPU lacks it.
pub(super) fn run<J: Job>(level: SimdLevel, job: J) -> Result<J::Out, StepError> {
    if !level.is_supported() {
        return Err(StepError::UnsupportedSimd(level.name()));
    }
    Ok(match level {
        #[cfg(target_arch = "x86_64")]
        // SAFETY: the CPU supports `level`, checked above.
        SimdLevel::Avx512 => unsafe { super::lanes::Avx512::framed(job) },
        #[cfg(target_arch = "x86_64")]
        // SAFETY: the CPU supports `level`, checked above.
        SimdLevel::Avx2 => unsafe { super::lanes::Avx2::framed(job) },
        #[cfg(target_arch = "aarch64")]
        // SAFETY: the CPU supports `level`, checked above.
        SimdLevel::Neon => unsafe { run_neon(job) },
        // SAFETY: the scalar level runs on any CPU.
        _ => unsafe { Scalar::framed(job) },
    })
}

/// `got` elements where `expected` are needed: an error naming the buffer.
pub(super) fn check_len(
    buffer: &'static str,
    expected: usize,
    got: usize,
) -> Result<(), StepError> {
    if expected == got {
        Ok(())
    } else {
        Err(StepError::LengthMismatch {
            index: 0,
            buffer,
            expected,
            got,
        })
    }
}

struct Encode<'a, const SIGNED: bool> {
    book: &'a Codebook,
    x: &'a [f32],
    codes: &'a mut [u8],
    absmax: &'a mut [f32],
}

impl<const SIGNED: bool> Job for Encode<'_, SIGNED> {
    type Out = ();
    #[inline(always)]
    unsafe fn run<L: Lanes>(self) {
        // SAFETY: `L`'s level is enabled, as this function's contract requires.
        unsafe {
            let encoder = Encoder::<L, SIGNED>::new(self.book);
            let blocks = self.x.chunks(BLOCK).zip(self.codes.chunks_mut(BLOCK));
            for ((x, codes), absmax) in blocks.zip(self.absmax.iter_mut()) {
                *absmax = encoder.block(x, codes);
            }
        }
    }
}

struct Decode<'a> {
    book: &'a Codebook,
    codes: &'a [u8],
    absmax: &'a [f32],
    out: &'a mut [f32],
}

impl Job for Decode<'_> {
    type Out = ();
    #[inline(always)]
    unsafe fn run<L: Lanes>(self) {
        // SAFETY: `L`'s level is enabled, as this function's contract requires.
        unsafe {
            let blocks = self.codes.chunks(BLOCK).zip(self.out.chunks_mut(BLOCK));
            for ((codes, out), &absmax) in blocks.zip(self.absmax) {
                decode_block::<L>(self.book, codes, absmax, out);
            }
        }
    }
}

/// Quantize `x` (one tensor, or a run of whole blocks of one) into `codes`
/// (one per element) and `absmax` (one per block of [`BLOCK`]).
pub fn encode(
    level: SimdLevel,
    book: &Codebook,
    x: &[f32],
    codes: &mut [u8],
    absmax: &mut [f32],
) -> Result<(), StepError> {
    check_len("codes", x.len(), codes.len())?;
    check_len("absmax", blocks(x.len()), absmax.len())?;
    if book.mirrors() {
        run(
            level,
            Encode::<true> {
                book,
                x,
                codes,
                absmax,
            },
        )
    } else {
        run(
            level,
            Encode::<false> {
                book,
                x,
                codes,
                absmax,
            },
        )
    }
}

/// Dequantize `codes` and their blocks' `absmax` into `out`.
pub fn decode(
    level: SimdLevel,
    book: &Codebook,
    codes: &[u8],
    absmax: &[f32],
    out: &mut [f32],
) -> Result<(), StepError> {
    check_len("codes", out.len(), codes.len())?;
    check_len("absmax", blocks(out.len()), absmax.len())?;
    run(
        level,
        Decode {
            book,
            codes,
            absmax,
            out,
        },
    )
}
