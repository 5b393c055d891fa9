//! The handful of vector operations the 8-bit codec is written in, one
//! implementation per SIMD level: plain `u32`/`f32` (one lane) for the scalar
//! level, AVX2 (8 lanes) and AVX-512F (16 lanes) on x86_64. The codec's
//! algorithm is written once over this trait, so every level runs the same
//! integer and IEEE operations and gives the same bits.
//!
//! The tables (2945 cells per map for encode, 256 floats for decode) are too
//! large for in-register permutes: they are read with gathers, or scalar
//! loads where those measured faster (see `Avx2`).

/// Vector operations over `N` lanes of `u32` (`U`) and `f32` (`F`).
///
/// # Safety
/// An implementation may use instructions of its SIMD level: its methods may
/// only run inside a function compiled for that level (`#[target_feature]`)
/// on a CPU that has it. Pointer arguments must be valid for `N` elements
/// (gathers: every lane's index inside the table).
pub(super) unsafe trait Lanes {
    const N: usize;
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
    /// Logical shifts right by 16 and by 17.
    unsafe fn shr16(a: Self::U) -> Self::U;
    unsafe fn shr17(a: Self::U) -> Self::U;
    /// Unsigned maximum and minimum.
    unsafe fn max(a: Self::U, b: Self::U) -> Self::U;
    unsafe fn min(a: Self::U, b: Self::U) -> Self::U;
    unsafe fn sub(a: Self::U, b: Self::U) -> Self::U;
    /// `x - 1` in the lanes where `a > b`, `x` elsewhere (lanes below 2^31).
    unsafe fn dec_where_gt(x: Self::U, a: Self::U, b: Self::U) -> Self::U;
    /// `neg` in the lanes whose `sign` has its top bit set, `pos` elsewhere.
    unsafe fn select_negative(sign: Self::U, neg: Self::U, pos: Self::U) -> Self::U;
    /// `table[idx]` in each lane.
    unsafe fn gather_u(table: *const u32, idx: Self::U) -> Self::U;
    /// `table[codes[i]]` for the `N` bytes at `codes`.
    unsafe fn lookup(table: *const f32, codes: *const u8) -> Self::F;
    /// The low byte of each lane, into `N` bytes.
    unsafe fn store_bytes(p: *mut u8, v: Self::U);
    /// [`Lanes::store_bytes`] of four vectors, into `4 * N` bytes.
    #[inline(always)]
    unsafe fn store_bytes4(p: *mut u8, a: Self::U, b: Self::U, c: Self::U, d: Self::U) {
        Self::store_bytes(p, a);
        Self::store_bytes(p.add(Self::N), b);
        Self::store_bytes(p.add(2 * Self::N), c);
        Self::store_bytes(p.add(3 * Self::N), d);
    }
    /// The largest lane (unsigned).
    unsafe fn reduce_max(v: Self::U) -> u32;
}

/// One lane: the portable level, and the tails of the vector levels.
pub(super) struct Scalar;

unsafe impl Lanes for Scalar {
    const N: usize = 1;
    type U = u32;
    type F = f32;
    #[inline(always)]
    unsafe fn load(p: *const f32) -> f32 {
        *p
    }
    #[inline(always)]
    unsafe fn store(p: *mut f32, v: f32) {
        *p = v
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
    unsafe fn shr16(a: u32) -> u32 {
        a >> 16
    }
    #[inline(always)]
    unsafe fn shr17(a: u32) -> u32 {
        a >> 17
    }
    #[inline(always)]
    unsafe fn max(a: u32, b: u32) -> u32 {
        a.max(b)
    }
    #[inline(always)]
    unsafe fn min(a: u32, b: u32) -> u32 {
        a.min(b)
    }
    #[inline(always)]
    unsafe fn sub(a: u32, b: u32) -> u32 {
        a.wrapping_sub(b)
    }
    #[inline(always)]
    unsafe fn dec_where_gt(x: u32, a: u32, b: u32) -> u32 {
        x - (a > b) as u32
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
        *table.add(idx as usize)
    }
    #[inline(always)]
    unsafe fn lookup(table: *const f32, codes: *const u8) -> f32 {
        *table.add(*codes as usize)
    }
    #[inline(always)]
    unsafe fn store_bytes(p: *mut u8, v: u32) {
        *p = v as u8
    }
    #[inline(always)]
    unsafe fn reduce_max(v: u32) -> u32 {
        v
    }
}

#[cfg(target_arch = "x86_64")]
pub(super) use x86::{Avx2, Avx512};

#[cfg(target_arch = "x86_64")]
mod x86 {
    use std::arch::x86_64::*;

    use super::Lanes;

    /// AVX2: 8 lanes. Decoding reads the 256 values with eight scalar loads
    /// (the codes are bytes in memory), which beats `vpgatherdd` on AMD Zen 3;
    /// encoding's cell indices are in a register, where the gather beats
    /// moving them out (both measured on Zen 3).
    pub(in crate::quant) struct Avx2;

    unsafe impl Lanes for Avx2 {
        const N: usize = 8;
        type U = __m256i;
        type F = __m256;
        #[inline(always)]
        unsafe fn load(p: *const f32) -> __m256 {
            _mm256_loadu_ps(p)
        }
        #[inline(always)]
        unsafe fn store(p: *mut f32, v: __m256) {
            _mm256_storeu_ps(p, v)
        }
        #[inline(always)]
        unsafe fn splat(x: f32) -> __m256 {
            _mm256_set1_ps(x)
        }
        #[inline(always)]
        unsafe fn mul(a: __m256, b: __m256) -> __m256 {
            _mm256_mul_ps(a, b)
        }
        #[inline(always)]
        unsafe fn bits(v: __m256) -> __m256i {
            _mm256_castps_si256(v)
        }
        #[inline(always)]
        unsafe fn splat_u(x: u32) -> __m256i {
            _mm256_set1_epi32(x as i32)
        }
        #[inline(always)]
        unsafe fn and(a: __m256i, b: __m256i) -> __m256i {
            _mm256_and_si256(a, b)
        }
        #[inline(always)]
        unsafe fn shr16(a: __m256i) -> __m256i {
            _mm256_srli_epi32::<16>(a)
        }
        #[inline(always)]
        unsafe fn shr17(a: __m256i) -> __m256i {
            _mm256_srli_epi32::<17>(a)
        }
        #[inline(always)]
        unsafe fn max(a: __m256i, b: __m256i) -> __m256i {
            _mm256_max_epu32(a, b)
        }
        #[inline(always)]
        unsafe fn min(a: __m256i, b: __m256i) -> __m256i {
            _mm256_min_epu32(a, b)
        }
        #[inline(always)]
        unsafe fn sub(a: __m256i, b: __m256i) -> __m256i {
            _mm256_sub_epi32(a, b)
        }
        #[inline(always)]
        unsafe fn dec_where_gt(x: __m256i, a: __m256i, b: __m256i) -> __m256i {
            // The comparison's all-ones lanes are -1.
            _mm256_add_epi32(x, _mm256_cmpgt_epi32(a, b))
        }
        #[inline(always)]
        unsafe fn select_negative(sign: __m256i, neg: __m256i, pos: __m256i) -> __m256i {
            // blendv_ps picks by each lane's top bit.
            _mm256_castps_si256(_mm256_blendv_ps(
                _mm256_castsi256_ps(pos),
                _mm256_castsi256_ps(neg),
                _mm256_castsi256_ps(sign),
            ))
        }
        #[inline(always)]
        unsafe fn gather_u(table: *const u32, idx: __m256i) -> __m256i {
            _mm256_i32gather_epi32::<4>(table as *const i32, idx)
        }
        #[inline(always)]
        unsafe fn lookup(table: *const f32, codes: *const u8) -> __m256 {
            let t = |k: usize| *table.add(*codes.add(k) as usize);
            _mm256_setr_ps(t(0), t(1), t(2), t(3), t(4), t(5), t(6), t(7))
        }
        #[inline(always)]
        unsafe fn store_bytes(p: *mut u8, v: __m256i) {
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
        #[inline(always)]
        unsafe fn store_bytes4(p: *mut u8, a: __m256i, b: __m256i, c: __m256i, d: __m256i) {
            // The packs work within 128-bit halves: the bytes come out as the
            // dwords a0-3 b0-3 c0-3 d0-3 a4-7 b4-7 c4-7 d4-7, then reordered.
            let bytes = _mm256_packus_epi16(_mm256_packus_epi32(a, b), _mm256_packus_epi32(c, d));
            let order = _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7);
            _mm256_storeu_si256(p as *mut __m256i, _mm256_permutevar8x32_epi32(bytes, order));
        }
        #[inline(always)]
        unsafe fn reduce_max(v: __m256i) -> u32 {
            let m = _mm_max_epu32(_mm256_castsi256_si128(v), _mm256_extracti128_si256::<1>(v));
            let m = _mm_max_epu32(m, _mm_shuffle_epi32::<0b01_00_11_10>(m));
            let m = _mm_max_epu32(m, _mm_shuffle_epi32::<0b10_11_00_01>(m));
            _mm_cvtsi128_si32(m) as u32
        }
    }

    /// AVX-512F: 16 lanes, compare results in mask registers.
    pub(in crate::quant) struct Avx512;

    // The AVX-512 intrinsics are stable since Rust 1.89, as is the `avx512f`
    // target feature that `simd.rs` already enables: the crate's declared
    // rust-version (1.85) predates both.
    #[allow(clippy::incompatible_msrv)]
    unsafe impl Lanes for Avx512 {
        const N: usize = 16;
        type U = __m512i;
        type F = __m512;
        #[inline(always)]
        unsafe fn load(p: *const f32) -> __m512 {
            _mm512_loadu_ps(p)
        }
        #[inline(always)]
        unsafe fn store(p: *mut f32, v: __m512) {
            _mm512_storeu_ps(p, v)
        }
        #[inline(always)]
        unsafe fn splat(x: f32) -> __m512 {
            _mm512_set1_ps(x)
        }
        #[inline(always)]
        unsafe fn mul(a: __m512, b: __m512) -> __m512 {
            _mm512_mul_ps(a, b)
        }
        #[inline(always)]
        unsafe fn bits(v: __m512) -> __m512i {
            _mm512_castps_si512(v)
        }
        #[inline(always)]
        unsafe fn splat_u(x: u32) -> __m512i {
            _mm512_set1_epi32(x as i32)
        }
        #[inline(always)]
        unsafe fn and(a: __m512i, b: __m512i) -> __m512i {
            _mm512_and_si512(a, b)
        }
        #[inline(always)]
        unsafe fn shr16(a: __m512i) -> __m512i {
            _mm512_srli_epi32::<16>(a)
        }
        #[inline(always)]
        unsafe fn shr17(a: __m512i) -> __m512i {
            _mm512_srli_epi32::<17>(a)
        }
        #[inline(always)]
        unsafe fn max(a: __m512i, b: __m512i) -> __m512i {
            _mm512_max_epu32(a, b)
        }
        #[inline(always)]
        unsafe fn min(a: __m512i, b: __m512i) -> __m512i {
            _mm512_min_epu32(a, b)
        }
        #[inline(always)]
        unsafe fn sub(a: __m512i, b: __m512i) -> __m512i {
            _mm512_sub_epi32(a, b)
        }
        #[inline(always)]
        unsafe fn dec_where_gt(x: __m512i, a: __m512i, b: __m512i) -> __m512i {
            let gt = _mm512_cmpgt_epi32_mask(a, b);
            _mm512_mask_sub_epi32(x, gt, x, _mm512_set1_epi32(1))
        }
        #[inline(always)]
        unsafe fn select_negative(sign: __m512i, neg: __m512i, pos: __m512i) -> __m512i {
            let negative = _mm512_cmplt_epi32_mask(sign, _mm512_setzero_si512());
            _mm512_mask_blend_epi32(negative, pos, neg)
        }
        #[inline(always)]
        unsafe fn gather_u(table: *const u32, idx: __m512i) -> __m512i {
            _mm512_i32gather_epi32::<4>(idx, table as *const i32)
        }
        #[inline(always)]
        unsafe fn lookup(table: *const f32, codes: *const u8) -> __m512 {
            let idx = _mm512_cvtepu8_epi32(_mm_loadu_si128(codes as *const __m128i));
            _mm512_i32gather_ps::<4>(idx, table)
        }
        #[inline(always)]
        unsafe fn store_bytes(p: *mut u8, v: __m512i) {
            _mm_storeu_si128(p as *mut __m128i, _mm512_cvtepi32_epi8(v))
        }
        #[inline(always)]
        unsafe fn reduce_max(v: __m512i) -> u32 {
            _mm512_reduce_max_epu32(v)
        }
    }
}
