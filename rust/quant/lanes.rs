//! The handful of vector operations the 8-bit codec is written in, one
//! implementation per SIMD level: plain `u32`/`f32` (one lane) for the scalar
//! level, AVX2 (8 lanes) and AVX-512F (16 lanes) on x86_64. The codec's
//! algorithm is written once over this trait, so every level runs the same
//! integer and IEEE operations and gives the same bits.
//!
//! The 256 floats of a map are too many for in-register permutes on AVX2:
//! decoding reads them with scalar loads (faster than a gather on Zen 3).
//! Encoding uses small per-decade tables held in registers (`decades`), and
//! one gather of a 256-entry table only where that is undecided.

use super::decades::Decades;

/// Work compiled once per SIMD level (see [`Lanes::framed`]).
pub(super) trait Job {
    type Out;
    /// # Safety
    /// `L`'s level must be enabled in the calling function and supported by the CPU.
    unsafe fn run<L: Lanes>(self) -> Self::Out;
}

/// Vector operations over `N` lanes of `u32` (`U`) and `f32` (`F`).
///
/// # Safety
/// An implementation may use instructions of its SIMD level: its methods may
/// only run inside a function compiled for that level (`#[target_feature]`)
/// on a CPU that has it. Pointer arguments must be valid for `N` elements
/// unless a method says otherwise (gathers and lookups: every lane's index
/// inside the table).
pub(super) unsafe trait Lanes {
    const N: usize;
    /// Runs `job` at this level in a frame of its own: a function compiled
    /// for the level, never inlined. A debug build gives every local of
    /// every inlined body a slot of its own, so each frame holds one job's
    /// locals only, and every path runs on a small stack.
    ///
    /// # Safety
    /// The CPU has the level (the caller need not be compiled for it).
    unsafe fn framed<J: Job>(job: J) -> J::Out;
    type U: Copy;
    type F: Copy;
    unsafe fn load(p: *const f32) -> Self::F;
    unsafe fn store(p: *mut f32, v: Self::F);
    unsafe fn splat(x: f32) -> Self::F;
    unsafe fn mul(a: Self::F, b: Self::F) -> Self::F;
    /// The IEEE bits of each lane.
    unsafe fn bits(v: Self::F) -> Self::U;
    unsafe fn splat_u(x: u32) -> Self::U;
    unsafe fn and(a: Self::U, b: Self::U) -> Self::U;
    /// Unsigned maximum.
    unsafe fn max(a: Self::U, b: Self::U) -> Self::U;
    unsafe fn sub(a: Self::U, b: Self::U) -> Self::U;
    /// `neg` in the lanes whose `sign` has its top bit set, `pos` elsewhere.
    unsafe fn select_negative(sign: Self::U, neg: Self::U, pos: Self::U) -> Self::U;
    /// `table[idx]` in each lane.
    unsafe fn gather_u(table: *const u32, idx: Self::U) -> Self::U;
    /// `table[codes[i]]` for the `N` bytes at `codes`.
    unsafe fn lookup(table: *const f32, codes: *const u8) -> Self::F;
    /// `out[i] = values[codes[i]] * scale` for the first `n / 64 * 64`
    /// codes, where the level has a faster way than [`Lanes::lookup`]
    /// (`planes[b][c]`: byte `b` of `values[c]`'s bits); returns how many it
    /// decoded (0: none; the caller decodes the rest). `codes` and `out` are
    /// valid for `n` elements, and do not overlap.
    #[inline(always)]
    unsafe fn decode_run(
        _planes: &[[u8; 256]; 4],
        _codes: *const u8,
        _scale: f32,
        _out: *mut f32,
        _n: usize,
    ) -> usize {
        0
    }
    /// The codes of `x[j] * scale` by `decades` (of the signed map or not)
    /// into `out` for the first `n / 64 * 64` values, where the level has a
    /// faster way than the generic loop; returns how many it encoded (0:
    /// none) and the undecided groups of 64 (bit `g`: from value `64 g`).
    /// `x` and `out` are valid for `n` elements.
    #[inline(always)]
    unsafe fn encode_run(
        _decades: &Decades,
        _signed: bool,
        _x: *const f32,
        _scale: f32,
        _out: *mut u8,
        _n: usize,
    ) -> (usize, u64) {
        (0, 0)
    }
    /// The low byte of each lane, into `N` bytes.
    unsafe fn store_bytes(p: *mut u8, v: Self::U);
    /// [`Lanes::store_bytes`] of four vectors, into `4 * N` bytes.
    #[inline(always)]
    unsafe fn store_bytes4(p: *mut u8, a: Self::U, b: Self::U, c: Self::U, d: Self::U) {
        // SAFETY: the caller enables the level (the trait's contract) and
        // hands `4 * N` bytes at `p`: four runs of `N`.
        unsafe {
            Self::store_bytes(p, a);
            Self::store_bytes(p.add(Self::N), b);
            Self::store_bytes(p.add(2 * Self::N), c);
            Self::store_bytes(p.add(3 * Self::N), d);
        }
    }
    /// The largest lane (unsigned).
    unsafe fn reduce_max(v: Self::U) -> u32;

    // For the arithmetic encoder (`decades`).
    /// A table of 8 `u32`, 8 `f32` and 16 bytes, held as the level likes it
    /// (the scalar level: a pointer to it, so the table must outlive its use).
    type T8U: Copy;
    type T8F: Copy;
    type T16B: Copy;
    unsafe fn table_u(t: &[u32; 8]) -> Self::T8U;
    unsafe fn table_f(t: &[f32; 8]) -> Self::T8F;
    unsafe fn table_b(t: &[u8; 16]) -> Self::T16B;
    /// `t[idx & 7]` in each lane.
    unsafe fn permute_u(t: Self::T8U, idx: Self::U) -> Self::U;
    unsafe fn permute_f(t: Self::T8F, idx: Self::U) -> Self::F;
    /// `t[(a >> 24) - 48]` in each lane (`a >> 24` in 48..64: `a` is the
    /// bits of a float in [2^-31, 2)).
    unsafe fn octave_pair_lookup(t: Self::T16B, a: Self::U) -> Self::U;
    /// Shift left by 23 (onto a float's exponent field).
    unsafe fn shl23(a: Self::U) -> Self::U;
    /// Signed maximum.
    unsafe fn max_i(a: Self::U, b: Self::U) -> Self::U;
    /// `a`, negated in the lanes where `b` is negative (as signed), 0 where `b` is 0.
    unsafe fn sign(a: Self::U, b: Self::U) -> Self::U;
    unsafe fn add_u(a: Self::U, b: Self::U) -> Self::U;
    unsafe fn xor(a: Self::U, b: Self::U) -> Self::U;
    /// `x + 1` in the lanes where `a > b` (as signed), `x` elsewhere.
    unsafe fn inc_where_gt(x: Self::U, a: Self::U, b: Self::U) -> Self::U;
    /// `a * b + c`, rounded once.
    unsafe fn fma(a: Self::F, b: Self::F, c: Self::F) -> Self::F;
    /// `if a < b { a } else { b }` in each lane (`b` when either is NaN).
    unsafe fn min_f(a: Self::F, b: Self::F) -> Self::F;
    /// `if a > b { a } else { b }` in each lane (`b` when either is NaN).
    unsafe fn max_f(a: Self::F, b: Self::F) -> Self::F;
    unsafe fn sub_f(a: Self::F, b: Self::F) -> Self::F;
    unsafe fn div(a: Self::F, b: Self::F) -> Self::F;
    unsafe fn sqrt(a: Self::F) -> Self::F;
    /// `x` in the lanes where `a > 0`, else 0.
    unsafe fn where_positive(a: Self::F, x: Self::F) -> Self::F;
    /// The float whose bits each lane holds.
    unsafe fn from_bits(a: Self::U) -> Self::F;
    unsafe fn add(a: Self::F, b: Self::F) -> Self::F;
    /// Each lane truncated towards zero to an integer (`|x| < 2^31`), as bits of an `i32`.
    unsafe fn trunc(a: Self::F) -> Self::U;
    /// Lanes whose low 16 bits are the larger of `a`'s and `b`'s low 16
    /// bits (the high 16 bits are whatever the level finds cheapest).
    unsafe fn max_low16(a: Self::U, b: Self::U) -> Self::U;
    /// Whether any lane's low 16 bits are `t` or more.
    #[inline(always)]
    unsafe fn any_low16_at_least(a: Self::U, t: u32) -> bool {
        // SAFETY: the caller enables the level (the trait's contract); no pointers.
        unsafe { Self::reduce_max(Self::and(a, Self::splat_u(0xffff))) >= t }
    }
}

/// One lane: the portable level, and the tails of the vector levels.
pub(super) struct Scalar;

#[inline(never)]
fn run_scalar<J: Job>(job: J) -> J::Out {
    // SAFETY: the scalar lanes are plain Rust.
    unsafe { job.run::<Scalar>() }
}

// SAFETY: one lane, `N = 1`, and each method touches only the elements the
// trait documents for it.
unsafe impl Lanes for Scalar {
    const N: usize = 1;
    #[inline(always)]
    unsafe fn framed<J: Job>(job: J) -> J::Out {
        run_scalar(job)
    }
    type U = u32;
    type F = f32;
    #[inline(always)]
    unsafe fn load(p: *const f32) -> f32 {
        // SAFETY: `p` is valid for one float (the trait's contract).
        unsafe { *p }
    }
    #[inline(always)]
    unsafe fn store(p: *mut f32, v: f32) {
        // SAFETY: `p` is valid for one float (the trait's contract).
        unsafe { *p = v }
    }
    #[inline(always)]
    unsafe fn splat(x: f32) -> f32 {
        x
    }
    #[inline(always)]
    unsafe fn mul(a: f32, b: f32) -> f32 {
        a * b
    }
    #[inline(always)]
    unsafe fn bits(v: f32) -> u32 {
        v.to_bits()
    }
    #[inline(always)]
    unsafe fn splat_u(x: u32) -> u32 {
        x
    }
    #[inline(always)]
    unsafe fn and(a: u32, b: u32) -> u32 {
        a & b
    }
    #[inline(always)]
    unsafe fn max(a: u32, b: u32) -> u32 {
        a.max(b)
    }
    #[inline(always)]
    unsafe fn sub(a: u32, b: u32) -> u32 {
        a.wrapping_sub(b)
    }
    #[inline(always)]
    unsafe fn select_negative(sign: u32, neg: u32, pos: u32) -> u32 {
        if sign >> 31 != 0 {
            neg
        } else {
            pos
        }
    }
    #[inline(always)]
    unsafe fn gather_u(table: *const u32, idx: u32) -> u32 {
        // SAFETY: `idx` is inside the table (the trait's contract).
        unsafe { *table.add(idx as usize) }
    }
    #[inline(always)]
    unsafe fn lookup(table: *const f32, codes: *const u8) -> f32 {
        // SAFETY: `codes` is valid for one byte, and every byte indexes
        // inside the table (the trait's contract).
        unsafe { *table.add(*codes as usize) }
    }
    #[inline(always)]
    unsafe fn store_bytes(p: *mut u8, v: u32) {
        // SAFETY: `p` is valid for one byte (the trait's contract).
        unsafe { *p = v as u8 }
    }
    #[inline(always)]
    unsafe fn reduce_max(v: u32) -> u32 {
        v
    }
    // The tables where they are (a copy, indexed, is copied to the stack
    // for every value).
    type T8U = *const u32;
    type T8F = *const f32;
    type T16B = *const u8;
    #[inline(always)]
    unsafe fn table_u(t: &[u32; 8]) -> *const u32 {
        t.as_ptr()
    }
    #[inline(always)]
    unsafe fn table_f(t: &[f32; 8]) -> *const f32 {
        t.as_ptr()
    }
    #[inline(always)]
    unsafe fn table_b(t: &[u8; 16]) -> *const u8 {
        t.as_ptr()
    }
    #[inline(always)]
    unsafe fn permute_u(t: *const u32, idx: u32) -> u32 {
        // SAFETY: `t` points at a table of 8 that outlives its use
        // (`table_u`'s contract); the index is below 8.
        unsafe { *t.add(idx as usize & 7) }
    }
    #[inline(always)]
    unsafe fn permute_f(t: *const f32, idx: u32) -> f32 {
        // SAFETY: `t` points at a table of 8 that outlives its use
        // (`table_f`'s contract); the index is below 8.
        unsafe { *t.add(idx as usize & 7) }
    }
    #[inline(always)]
    unsafe fn octave_pair_lookup(t: *const u8, a: u32) -> u32 {
        // SAFETY: `t` points at a table of 16 that outlives its use
        // (`table_b`'s contract); the index is below 16.
        unsafe { *t.add((a >> 24) as usize & 15) as u32 }
    }
    #[inline(always)]
    unsafe fn shl23(a: u32) -> u32 {
        a << 23
    }
    #[inline(always)]
    unsafe fn max_i(a: u32, b: u32) -> u32 {
        (a as i32).max(b as i32) as u32
    }
    #[inline(always)]
    unsafe fn sign(a: u32, b: u32) -> u32 {
        match (b as i32).signum() {
            -1 => a.wrapping_neg(),
            0 => 0,
            _ => a,
        }
    }
    #[inline(always)]
    unsafe fn add_u(a: u32, b: u32) -> u32 {
        a.wrapping_add(b)
    }
    #[inline(always)]
    unsafe fn xor(a: u32, b: u32) -> u32 {
        a ^ b
    }
    #[inline(always)]
    unsafe fn inc_where_gt(x: u32, a: u32, b: u32) -> u32 {
        x.wrapping_add(((a as i32) > (b as i32)) as u32)
    }
    #[inline(always)]
    unsafe fn fma(a: f32, b: f32, c: f32) -> f32 {
        a.mul_add(b, c)
    }
    #[inline(always)]
    unsafe fn min_f(a: f32, b: f32) -> f32 {
        if a < b {
            a
        } else {
            b
        }
    }
    #[inline(always)]
    unsafe fn max_f(a: f32, b: f32) -> f32 {
        if a > b {
            a
        } else {
            b
        }
    }
    #[inline(always)]
    unsafe fn sub_f(a: f32, b: f32) -> f32 {
        a - b
    }
    #[inline(always)]
    unsafe fn div(a: f32, b: f32) -> f32 {
        a / b
    }
    #[inline(always)]
    unsafe fn sqrt(a: f32) -> f32 {
        a.sqrt()
    }
    #[inline(always)]
    unsafe fn where_positive(a: f32, x: f32) -> f32 {
        if a > 0.0 {
            x
        } else {
            0.0
        }
    }
    #[inline(always)]
    unsafe fn from_bits(a: u32) -> f32 {
        f32::from_bits(a)
    }
    #[inline(always)]
    unsafe fn add(a: f32, b: f32) -> f32 {
        a + b
    }
    #[inline(always)]
    unsafe fn trunc(a: f32) -> u32 {
        a as i32 as u32
    }
    #[inline(always)]
    unsafe fn max_low16(a: u32, b: u32) -> u32 {
        (a & 0xffff).max(b & 0xffff)
    }
}

#[cfg(target_arch = "x86_64")]
pub(super) use x86::{Avx2, Avx512};

#[cfg(target_arch = "x86_64")]
mod x86 {
    use std::arch::x86_64::*;

    use super::{Decades, Job, Lanes};

    /// Writes the `Lanes` impls of both x86 levels from one list: each
    /// method's signature once, with its AVX2 body and its AVX-512 body.
    /// Under `intrinsics`, the methods that are one intrinsic applied to the
    /// method's arguments in order, as `AVX2, AVX-512` (`u` and `f`: the
    /// `U`-by-`U` and `F`-by-`F` ones). A body `default` keeps the trait's
    /// default method at that level.
    macro_rules! x86_lanes {
        (@impl [$($attr:tt)*] $level:ident {
            N = $n:literal, features = $features:literal,
            U = $u:ty, F = $f:ty, T8U = $t8u:ty, T8F = $t8f:ty, T16B = $t16b:ty $(,)?
        } $($name:ident($($arg:ident: $ty:ty),*) $(-> $ret:ty)? => $body:tt)*) => {
            $($attr)*
            // SAFETY: `N` is the lane count of `U` and `F` (32-bit lanes of the
            // level's registers), and each method's loads, stores and gathers
            // touch only the elements the trait documents for it.
            unsafe impl Lanes for $level {
                const N: usize = $n;
                type U = $u;
                type F = $f;
                type T8U = $t8u;
                type T8F = $t8f;
                type T16B = $t16b;
                #[inline(always)]
                unsafe fn framed<J: Job>(job: J) -> J::Out {
                    #[target_feature(enable = $features)]
                    #[inline(never)]
                    unsafe fn run<J: Job>(job: J) -> J::Out {
                        // SAFETY: this function is compiled for the level's
                        // features, and its one caller, `framed`, runs on a
                        // CPU that has them (the `Lanes` contract).
                        unsafe { job.run::<$level>() }
                    }
                    // SAFETY: the caller of `framed` guarantees the CPU has
                    // the level's features (the `Lanes` contract).
                    unsafe { run(job) }
                }
                $(x86_lanes!(@fn $name($($arg: $ty),*) $(-> $ret)? => $body);)*
            }
        };
        (@fn $name:ident($($arg:ident: $ty:ty),*) $(-> $ret:ty)? => default) => {};
        (@fn $name:ident($($arg:ident: $ty:ty),*) $(-> $ret:ty)? => $body:tt) => {
            #[inline(always)]
            unsafe fn $name($($arg: $ty),*) $(-> $ret)? {
                // SAFETY: the `Lanes` contract, which every caller of this
                // method keeps: it runs inside a function compiled for this
                // level's target features on a CPU that has them (all that
                // the intrinsics need), and its pointers are valid for the
                // elements the method documents (all that loads, stores and
                // gathers need).
                unsafe $body
            }
        };
        (
            $(#[$avx2_attr:meta])* Avx2 $avx2:tt
            $(#[$avx512_attr:meta])* Avx512 $avx512:tt
            intrinsics {
                $($i_name:ident($($i_arg:ident: $i_ty:ty),*) $(-> $i_ret:ty)?
                    = $i_avx2:ident, $i_avx512:ident;)*
            }
            u { $($u_name:ident = $u_avx2:ident, $u_avx512:ident;)* }
            f { $($f_name:ident = $f_avx2:ident, $f_avx512:ident;)* }
            $(fn $name:ident($($arg:ident: $ty:ty),*) $(-> $ret:ty)? {
                avx2: $avx2_body:tt
                avx512: $avx512_body:tt
            })*
        ) => {
            x86_lanes!(@impl [$(#[$avx2_attr])*] Avx2 $avx2
                $($i_name($($i_arg: $i_ty),*) $(-> $i_ret)? => { $i_avx2($($i_arg),*) })*
                $($u_name(a: Self::U, b: Self::U) -> Self::U => { $u_avx2(a, b) })*
                $($f_name(a: Self::F, b: Self::F) -> Self::F => { $f_avx2(a, b) })*
                $($name($($arg: $ty),*) $(-> $ret)? => $avx2_body)*);
            x86_lanes!(@impl [$(#[$avx512_attr])*] Avx512 $avx512
                $($i_name($($i_arg: $i_ty),*) $(-> $i_ret)? => { $i_avx512($($i_arg),*) })*
                $($u_name(a: Self::U, b: Self::U) -> Self::U => { $u_avx512(a, b) })*
                $($f_name(a: Self::F, b: Self::F) -> Self::F => { $f_avx512(a, b) })*
                $($name($($arg: $ty),*) $(-> $ret)? => $avx512_body)*);
        };
    }

    /// AVX2: 8 lanes. Decoding reads the 256 values with eight scalar loads
    /// (the codes are bytes in memory), which beats `vpgatherdd` on AMD Zen 3;
    /// encoding's fallback indices are in a register, where the gather beats
    /// moving them out (both measured on Zen 3).
    pub(in crate::quant) struct Avx2;

    /// AVX-512F: 16 lanes, compare results in mask registers. The 8-entry
    /// tables are held twice over 16 lanes, so an index of 8 (or any i)
    /// reads entry i & 7, as on the other levels.
    pub(in crate::quant) struct Avx512;

    x86_lanes! {
        Avx2 {
            N = 8, features = "avx2,fma",
            U = __m256i, F = __m256, T8U = __m256i, T8F = __m256, T16B = __m256i,
        }
        // The AVX-512 intrinsics are stable since Rust 1.89, as is the `avx512f`
        // target feature that `simd.rs` already enables: the crate's declared
        // rust-version (1.85) predates both.
        #[allow(clippy::incompatible_msrv)]
        Avx512 {
            N = 16, features = "avx512f,avx2,fma",
            U = __m512i, F = __m512, T8U = __m512i, T8F = __m512, T16B = __m512i,
        }
        intrinsics {
            load(p: *const f32) -> Self::F = _mm256_loadu_ps, _mm512_loadu_ps;
            store(p: *mut f32, v: Self::F) = _mm256_storeu_ps, _mm512_storeu_ps;
            splat(x: f32) -> Self::F = _mm256_set1_ps, _mm512_set1_ps;
            bits(v: Self::F) -> Self::U = _mm256_castps_si256, _mm512_castps_si512;
            from_bits(a: Self::U) -> Self::F = _mm256_castsi256_ps, _mm512_castsi512_ps;
            trunc(a: Self::F) -> Self::U = _mm256_cvttps_epi32, _mm512_cvttps_epi32;
            sqrt(a: Self::F) -> Self::F = _mm256_sqrt_ps, _mm512_sqrt_ps;
            fma(a: Self::F, b: Self::F, c: Self::F) -> Self::F = _mm256_fmadd_ps, _mm512_fmadd_ps;
        }
        // `(a: U, b: U) -> U` and `(a: F, b: F) -> F`, each one intrinsic.
        u {
            and = _mm256_and_si256, _mm512_and_si512; max = _mm256_max_epu32, _mm512_max_epu32;
            sub = _mm256_sub_epi32, _mm512_sub_epi32; max_i = _mm256_max_epi32, _mm512_max_epi32;
            add_u = _mm256_add_epi32, _mm512_add_epi32; xor = _mm256_xor_si256, _mm512_xor_si512;
        }
        f {
            mul = _mm256_mul_ps, _mm512_mul_ps; min_f = _mm256_min_ps, _mm512_min_ps;
            max_f = _mm256_max_ps, _mm512_max_ps; sub_f = _mm256_sub_ps, _mm512_sub_ps;
            div = _mm256_div_ps, _mm512_div_ps; add = _mm256_add_ps, _mm512_add_ps;
        }
        fn splat_u(x: u32) -> Self::U {
            avx2: { _mm256_set1_epi32(x as i32) }
            avx512: { _mm512_set1_epi32(x as i32) }
        }
        fn shl23(a: Self::U) -> Self::U {
            avx2: { _mm256_slli_epi32::<23>(a) }
            avx512: { _mm512_slli_epi32::<23>(a) }
        }
        fn select_negative(sign: Self::U, neg: Self::U, pos: Self::U) -> Self::U {
            avx2: {
                // blendv_ps picks by each lane's top bit.
                _mm256_castps_si256(_mm256_blendv_ps(
                    _mm256_castsi256_ps(pos),
                    _mm256_castsi256_ps(neg),
                    _mm256_castsi256_ps(sign),
                ))
            }
            avx512: {
                let negative = _mm512_cmplt_epi32_mask(sign, _mm512_setzero_si512());
                _mm512_mask_blend_epi32(negative, pos, neg)
            }
        }
        fn gather_u(table: *const u32, idx: Self::U) -> Self::U {
            avx2: { _mm256_i32gather_epi32::<4>(table as *const i32, idx) }
            avx512: { _mm512_i32gather_epi32::<4>(idx, table as *const i32) }
        }
        fn lookup(table: *const f32, codes: *const u8) -> Self::F {
            avx2: {
                let t = |k: usize| *table.add(*codes.add(k) as usize);
                _mm256_setr_ps(t(0), t(1), t(2), t(3), t(4), t(5), t(6), t(7))
            }
            avx512: {
                let idx = _mm512_cvtepu8_epi32(_mm_loadu_si128(codes as *const __m128i));
                _mm512_i32gather_ps::<4>(idx, table)
            }
        }
        fn decode_run(
            planes: &[[u8; 256]; 4],
            codes: *const u8,
            scale: f32,
            out: *mut f32,
            n: usize
        ) -> usize {
            avx2: default
            avx512: {
                if is_x86_feature_detected!("avx512vbmi") && is_x86_feature_detected!("avx512bw") {
                    let codes = std::slice::from_raw_parts(codes, n);
                    decode_planes(planes, codes, scale, std::slice::from_raw_parts_mut(out, n))
                } else {
                    0
                }
            }
        }
        fn encode_run(
            decades: &Decades,
            signed: bool,
            x: *const f32,
            scale: f32,
            out: *mut u8,
            n: usize
        ) -> (usize, u64) {
            avx2: default
            avx512: {
                use crate::quant::decades::encode_avx512;
                if !(is_x86_feature_detected!("avx512bw") && is_x86_feature_detected!("avx512dq")) {
                    (0, 0)
                } else if signed {
                    encode_avx512::<true>(decades, x, scale, out, n)
                } else {
                    encode_avx512::<false>(decades, x, scale, out, n)
                }
            }
        }
        fn store_bytes(p: *mut u8, v: Self::U) {
            avx2: {
                // Each 128-bit half gathers its four low bytes into its first
                // dword; then dwords 0 and 4 are brought together.
                let pick = _mm256_setr_epi8(
                    0, 4, 8, 12, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, //
                    0, 4, 8, 12, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1,
                );
                let packed = _mm256_permutevar8x32_epi32(
                    _mm256_shuffle_epi8(v, pick),
                    _mm256_setr_epi32(0, 4, 1, 1, 1, 1, 1, 1),
                );
                _mm_storel_epi64(p as *mut __m128i, _mm256_castsi256_si128(packed));
            }
            avx512: { _mm_storeu_si128(p as *mut __m128i, _mm512_cvtepi32_epi8(v)) }
        }
        fn store_bytes4(p: *mut u8, a: Self::U, b: Self::U, c: Self::U, d: Self::U) {
            avx2: {
                // The packs work within 128-bit halves: the bytes come out as the
                // dwords a0-3 b0-3 c0-3 d0-3 a4-7 b4-7 c4-7 d4-7, then reordered.
                let bytes =
                    _mm256_packus_epi16(_mm256_packus_epi32(a, b), _mm256_packus_epi32(c, d));
                let order = _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7);
                _mm256_storeu_si256(p as *mut __m256i, _mm256_permutevar8x32_epi32(bytes, order));
            }
            avx512: default
        }
        fn reduce_max(v: Self::U) -> u32 {
            avx2: {
                let m = _mm_max_epu32(_mm256_castsi256_si128(v), _mm256_extracti128_si256::<1>(v));
                let m = _mm_max_epu32(m, _mm_shuffle_epi32::<0b01_00_11_10>(m));
                let m = _mm_max_epu32(m, _mm_shuffle_epi32::<0b10_11_00_01>(m));
                _mm_cvtsi128_si32(m) as u32
            }
            avx512: { _mm512_reduce_max_epu32(v) }
        }
        fn table_u(t: &[u32; 8]) -> Self::T8U {
            avx2: { _mm256_loadu_si256(t.as_ptr() as *const __m256i) }
            avx512: {
                let half = _mm256_loadu_si256(t.as_ptr() as *const __m256i);
                _mm512_inserti64x4::<1>(_mm512_castsi256_si512(half), half)
            }
        }
        fn table_f(t: &[f32; 8]) -> Self::T8F {
            avx2: { _mm256_loadu_ps(t.as_ptr()) }
            avx512: { _mm512_castsi512_ps(Self::table_u(&t.map(f32::to_bits))) }
        }
        fn table_b(t: &[u8; 16]) -> Self::T16B {
            avx2: { _mm256_broadcastsi128_si256(_mm_loadu_si128(t.as_ptr() as *const __m128i)) }
            avx512: { _mm512_cvtepu8_epi32(_mm_loadu_si128(t.as_ptr() as *const __m128i)) }
        }
        fn permute_u(t: Self::T8U, idx: Self::U) -> Self::U {
            avx2: { _mm256_permutevar8x32_epi32(t, idx) }
            avx512: { _mm512_permutexvar_epi32(idx, t) }
        }
        fn permute_f(t: Self::T8F, idx: Self::U) -> Self::F {
            avx2: { _mm256_permutevar8x32_ps(t, idx) }
            avx512: { _mm512_permutexvar_ps(idx, t) }
        }
        fn octave_pair_lookup(t: Self::T16B, a: Self::U) -> Self::U {
            avx2: {
                // The byte shuffle reads the low 4 bits of a key of 48..64 (its
                // top bit clear). Bytes 1-3 of each lane are 0 after the shift:
                // they pick t[0], which the caller's table holds as 0.
                _mm256_shuffle_epi8(t, _mm256_srli_epi32::<24>(a))
            }
            avx512: {
                // AVX-512F has no byte shuffle: a 16-entry dword permute, which
                // reads the low 4 bits of a key of 48..64.
                _mm512_permutexvar_epi32(_mm512_srli_epi32::<24>(a), t)
            }
        }
        fn sign(a: Self::U, b: Self::U) -> Self::U {
            avx2: { _mm256_sign_epi32(a, b) }
            avx512: {
                // No psignd in AVX-512: negate where b < 0, zero where b == 0.
                let zero = _mm512_setzero_si512();
                let negative = _mm512_cmplt_epi32_mask(b, zero);
                let nonzero = _mm512_test_epi32_mask(b, b);
                _mm512_maskz_mov_epi32(nonzero, _mm512_mask_sub_epi32(a, negative, zero, a))
            }
        }
        fn inc_where_gt(x: Self::U, a: Self::U, b: Self::U) -> Self::U {
            avx2: { _mm256_sub_epi32(x, _mm256_cmpgt_epi32(a, b)) }
            avx512: {
                let gt = _mm512_cmpgt_epi32_mask(a, b);
                _mm512_mask_add_epi32(x, gt, x, _mm512_set1_epi32(1))
            }
        }
        fn where_positive(a: Self::F, x: Self::F) -> Self::F {
            avx2: { _mm256_and_ps(_mm256_cmp_ps::<_CMP_GT_OQ>(a, _mm256_setzero_ps()), x) }
            avx512: {
                let positive = _mm512_cmp_ps_mask::<_CMP_GT_OQ>(a, _mm512_setzero_ps());
                _mm512_maskz_mov_ps(positive, x)
            }
        }
        fn max_low16(a: Self::U, b: Self::U) -> Self::U {
            avx2: { _mm256_max_epu16(a, b) }
            avx512: {
                // No 16-bit maximum in AVX-512F: the low halves' 32-bit maximum.
                let low = _mm512_set1_epi32(0xffff);
                _mm512_max_epu32(_mm512_and_si512(a, low), _mm512_and_si512(b, low))
            }
        }
        fn any_low16_at_least(a: Self::U, t: u32) -> bool {
            avx2: {
                let low = _mm256_and_si256(a, _mm256_set1_epi32(0xffff));
                let at_least = _mm256_cmpgt_epi32(low, _mm256_set1_epi32(t as i32 - 1));
                _mm256_movemask_epi8(at_least) != 0
            }
            avx512: {
                let low = _mm512_and_si512(a, _mm512_set1_epi32(0xffff));
                _mm512_cmpge_epu32_mask(low, _mm512_set1_epi32(t as i32)) != 0
            }
        }
    }

    /// Where code `16m + 4j + t` goes among 64 (`j, m, t` in 0..4) so that
    /// [`decode_planes`]' unpacks, which work within 128-bit lanes, leave
    /// codes `16m..16m + 16` in order in output vector `m`: at `16j + 4m + t`.
    const PLANE_ORDER: [u8; 64] = {
        let mut order = [0u8; 64];
        let mut p = 0;
        while p < 64 {
            let (j, m, t) = (p / 16, p / 4 % 4, p % 4);
            order[p] = (16 * m + 4 * j + t) as u8;
            p += 1;
        }
        order
    };

    /// [`Lanes::decode_run`] with AVX-512 VBMI, 64 codes at a time: each
    /// byte of the 256 values is a plane of 256 bytes, four registers, which
    /// two `vpermi2b` (the codes' low 7 bits) and a blend (bit 7) look up;
    /// byte unpacks then assemble each value's four bytes.
    ///
    /// # Safety
    /// The CPU has AVX-512 F, BW and VBMI.
    #[target_feature(enable = "avx512f,avx512bw,avx512vbmi")]
    #[inline(never)]
    #[allow(clippy::incompatible_msrv)]
    unsafe fn decode_planes(
        planes: &[[u8; 256]; 4],
        codes: &[u8],
        scale: f32,
        out: &mut [f32],
    ) -> usize {
        let n = codes.len().min(out.len());
        // SAFETY: bytes 64q..64q + 64 (q < 4) of a 256-byte plane.
        let part = |b: usize, q: usize| unsafe {
            _mm512_loadu_si512(planes[b].as_ptr().add(64 * q) as *const _)
        };
        let quarters = |b: usize| [part(b, 0), part(b, 1), part(b, 2), part(b, 3)];
        let table = [quarters(0), quarters(1), quarters(2), quarters(3)];
        // SAFETY: PLANE_ORDER holds the 64 bytes read.
        let order = unsafe { _mm512_loadu_si512(PLANE_ORDER.as_ptr() as *const _) };
        let scale = _mm512_set1_ps(scale);
        let mut i = 0;
        while i + 64 <= n {
            // SAFETY: codes i..i + 64, inside the slice.
            let loaded = unsafe { _mm512_loadu_si512(codes.as_ptr().add(i) as *const _) };
            let c = _mm512_permutexvar_epi8(order, loaded);
            let high = _mm512_movepi8_mask(c);
            let byte = |[a, b, c2, d]: [__m512i; 4]| {
                let low = _mm512_permutex2var_epi8(a, c, b);
                _mm512_mask_blend_epi8(high, low, _mm512_permutex2var_epi8(c2, c, d))
            };
            let (b0, b1, b2, b3) = (
                byte(table[0]),
                byte(table[1]),
                byte(table[2]),
                byte(table[3]),
            );
            let (l01, h01) = (_mm512_unpacklo_epi8(b0, b1), _mm512_unpackhi_epi8(b0, b1));
            let (l23, h23) = (_mm512_unpacklo_epi8(b2, b3), _mm512_unpackhi_epi8(b2, b3));
            let values = [
                _mm512_unpacklo_epi16(l01, l23),
                _mm512_unpackhi_epi16(l01, l23),
                _mm512_unpacklo_epi16(h01, h23),
                _mm512_unpackhi_epi16(h01, h23),
            ];
            for (m, v) in values.into_iter().enumerate() {
                let scaled = _mm512_mul_ps(_mm512_castsi512_ps(v), scale);
                // SAFETY: floats i + 16m..i + 16m + 16 (m < 4), inside the slice.
                unsafe { _mm512_storeu_ps(out.as_mut_ptr().add(i + 16 * m), scaled) };
            }
            i += 64;
        }
        i
    }
}
