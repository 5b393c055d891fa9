//! How a buffer is stored: as the compute type, or as bfloat16 or float16
//! (computed in the compute type), and the conversions of a run of it to and
//! from the compute type: widening is exact, narrowing rounds to nearest even
//! (the `half` crate's conversions, which use F16C where the CPU has it), so
//! the result does not depend on the SIMD level. 8-bit state (a code per
//! element and a float32 absmax per block of [`Q8_BLOCK`]) is decoded and
//! encoded by `quant`, above this module.

use half::{bf16, f16};

use crate::element::Float;

/// A mutable buffer as it is stored.
pub enum StoredMut<'a, T> {
    /// Stored as the compute type itself: no staging.
    Native(&'a mut [T]),
    /// Stored as bfloat16, widened into `T` for the arithmetic.
    Bf16(&'a mut [bf16]),
    /// Stored as IEEE float16, widened into `T` for the arithmetic.
    F16(&'a mut [f16]),
    /// Stored in 8 bits: a code per element of the dynamic map (signed for the
    /// first moment and the velocity, unsigned for the others) and the absmax of
    /// each block of [`Q8_BLOCK`] elements; decoded into f32 for the arithmetic.
    Q8 {
        /// One code per element.
        codes: &'a mut [u8],
        /// One absmax per block (`codes.len().div_ceil(Q8_BLOCK)`).
        absmax: &'a mut [f32],
    },
}

/// Elements per block of 8-bit state, each with one float32 absmax (as
/// bitsandbytes' blockwise quantization). An 8-bit buffer is only ever split
/// on a multiple of it (or at its end), so no block is shared by two pieces.
pub const Q8_BLOCK: usize = 256;

/// A read-only buffer (a gradient) as it is stored.
#[derive(Clone, Copy)]
pub enum Stored<'a, T> {
    /// Stored as the compute type itself.
    Native(&'a [T]),
    /// Stored as bfloat16.
    Bf16(&'a [bf16]),
    /// Stored as IEEE float16.
    F16(&'a [f16]),
}

/// How a buffer is stored.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Kind {
    Native,
    Bf16,
    F16,
    Q8,
}

/// Elements of `s` before the first one at a 64-byte (cache line) boundary,
/// or 0 when none is (an address not a multiple of the element size).
pub(crate) fn to_line_boundary<X>(s: &[X]) -> usize {
    let size = std::mem::size_of::<X>();
    let bytes = (s.as_ptr() as usize).wrapping_neg() % 64;
    if bytes % size == 0 {
        (bytes / size).min(s.len())
    } else {
        0
    }
}

/// How far [`prefetch`] reads ahead into a buffer: a row of an embedding
/// table (64 float32, 256 bytes) and then some; the hardware prefetcher takes
/// over in longer runs.
const PREFETCH_BYTES: usize = 1024;

/// Ask the caches for the first [`PREFETCH_BYTES`] of `s`: a hint, which never
/// faults (and does nothing off x86-64). The rows of a row-sparse step lie at
/// random places in their table: fetching the next rows while one is stepped
/// hides the memory's latency.
pub(crate) fn prefetch<X>(s: &[X]) {
    #[cfg(target_arch = "x86_64")]
    {
        use std::arch::x86_64::{_mm_prefetch, _MM_HINT_T0};
        let start = s.as_ptr().cast::<i8>();
        for offset in (0..std::mem::size_of_val(s).min(PREFETCH_BYTES)).step_by(64) {
            // SAFETY: a prefetch reads nothing and never faults; the address is in `s`.
            unsafe { _mm_prefetch::<_MM_HINT_T0>(start.add(offset)) };
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = s;
}

impl<'a, T> StoredMut<'a, T> {
    pub(crate) fn kind(&self) -> Kind {
        match self {
            StoredMut::Native(_) => Kind::Native,
            StoredMut::Bf16(_) => Kind::Bf16,
            StoredMut::F16(_) => Kind::F16,
            StoredMut::Q8 { .. } => Kind::Q8,
        }
    }

    /// The buffer if it is stored natively; empty otherwise (callers check the kind).
    pub(crate) fn into_native(self) -> &'a mut [T] {
        match self {
            StoredMut::Native(s) => s,
            _ => &mut [],
        }
    }

    pub(crate) fn into_bf16(self) -> &'a mut [bf16] {
        match self {
            StoredMut::Bf16(s) => s,
            _ => &mut [],
        }
    }

    pub(crate) fn into_f16(self) -> &'a mut [f16] {
        match self {
            StoredMut::F16(s) => s,
            _ => &mut [],
        }
    }

    /// The codes and absmax of an 8-bit buffer; empty otherwise (callers check the kind).
    pub(crate) fn into_q8(self) -> (&'a mut [u8], &'a mut [f32]) {
        match self {
            StoredMut::Q8 { codes, absmax } => (codes, absmax),
            _ => (&mut [], &mut []),
        }
    }

    /// [`to_line_boundary`] of the buffer, whatever it is stored as (0 for
    /// 8-bit state, which is only cut on block boundaries).
    pub(crate) fn to_line_boundary(&self) -> usize {
        match self {
            StoredMut::Native(s) => to_line_boundary(s),
            StoredMut::Bf16(s) => to_line_boundary(s),
            StoredMut::F16(s) => to_line_boundary(s),
            StoredMut::Q8 { .. } => 0,
        }
    }
}

/// What holds a buffer that can be cut in two at an element, as slices can.
pub trait Split: Sized {
    /// The elements before `mid`, and the rest (`mid` at most the length).
    fn split_at(self, mid: usize) -> (Self, Self);
}

impl<T> Split for &mut [T] {
    fn split_at(self, mid: usize) -> (Self, Self) {
        self.split_at_mut(mid)
    }
}

impl<T> Split for &[T] {
    fn split_at(self, mid: usize) -> (Self, Self) {
        <[T]>::split_at(self, mid)
    }
}

/// The length and the split of a holder ([`StoredMut`], [`Stored`]), whatever
/// its variant holds; `$len` and `$split` are the arms of variants beyond the
/// three every holder has.
macro_rules! holder {
    ($holder:ident $(, $len:pat => $len_of:expr, $split:pat => |$mid:ident| $split_of:expr)?) => {
        impl<T> $holder<'_, T> {
            /// The number of elements.
            pub fn len(&self) -> usize {
                match self {
                    $holder::Native(s) => s.len(),
                    $holder::Bf16(s) => s.len(),
                    $holder::F16(s) => s.len(),
                    $($len => $len_of,)?
                }
            }

            /// No elements.
            pub fn is_empty(&self) -> bool {
                self.len() == 0
            }
        }

        impl<T> Split for $holder<'_, T> {
            fn split_at(self, mid: usize) -> (Self, Self) {
                match self {
                    $holder::Native(s) => {
                        let (a, b) = Split::split_at(s, mid);
                        ($holder::Native(a), $holder::Native(b))
                    }
                    $holder::Bf16(s) => {
                        let (a, b) = Split::split_at(s, mid);
                        ($holder::Bf16(a), $holder::Bf16(b))
                    }
                    $holder::F16(s) => {
                        let (a, b) = Split::split_at(s, mid);
                        ($holder::F16(a), $holder::F16(b))
                    }
                    $($split => {
                        let $mid = mid;
                        $split_of
                    }
                    )?
                }
            }
        }
    };
}

holder!(
    StoredMut,
    StoredMut::Q8 { codes, .. } => codes.len(),
    StoredMut::Q8 { codes, absmax } => |at| split_q8(codes, absmax, at)
);
holder!(Stored);

/// An 8-bit buffer cut at element `mid`, a multiple of [`Q8_BLOCK`] or its end
/// (the planner cuts nowhere else), with the absmax of the blocks on each side.
fn split_q8<'a, T>(
    codes: &'a mut [u8],
    absmax: &'a mut [f32],
    mid: usize,
) -> (StoredMut<'a, T>, StoredMut<'a, T>) {
    debug_assert!(mid % Q8_BLOCK == 0 || mid == codes.len());
    let (c0, c1) = codes.split_at_mut(mid);
    let (a0, a1) = absmax.split_at_mut(mid.div_ceil(Q8_BLOCK).min(absmax.len()));
    (
        StoredMut::Q8 {
            codes: c0,
            absmax: a0,
        },
        StoredMut::Q8 {
            codes: c1,
            absmax: a1,
        },
    )
}

impl<'a, T> Default for StoredMut<'a, T> {
    fn default() -> Self {
        StoredMut::Native(&mut [])
    }
}

/// Widen `src[start..start + dst.len()]` into `dst`.
pub(crate) fn load<T: Float>(src: &StoredMut<'_, T>, start: usize, dst: &mut [T]) {
    if dst.is_empty() {
        return; // a buffer that is off
    }
    let end = start + dst.len();
    match src {
        StoredMut::Native(s) => dst.copy_from_slice(&s[start..end]),
        StoredMut::Bf16(s) => T::widen_bf16(&s[start..end], dst),
        StoredMut::F16(s) => T::widen_f16(&s[start..end], dst),
        // Decoded by the caller (`staged.rs`), which has the codebooks.
        StoredMut::Q8 { .. } => {}
    }
}

/// Widen `src[start..start + dst.len()]` into `dst`.
pub(crate) fn load_grad<T: Float>(src: &Stored<'_, T>, start: usize, dst: &mut [T]) {
    let end = start + dst.len();
    match src {
        Stored::Native(s) => dst.copy_from_slice(&s[start..end]),
        Stored::Bf16(s) => T::widen_bf16(&s[start..end], dst),
        Stored::F16(s) => T::widen_f16(&s[start..end], dst),
    }
}

/// Round `src` back into `dst[start..]`, to nearest even.
pub(crate) fn store<T: Float>(src: &[T], dst: &mut StoredMut<'_, T>, start: usize) {
    if src.is_empty() {
        return; // a buffer that is off
    }
    let end = start + src.len();
    match dst {
        StoredMut::Native(d) => d[start..end].copy_from_slice(src),
        StoredMut::Bf16(d) => T::narrow_bf16(src, &mut d[start..end]),
        StoredMut::F16(d) => T::narrow_f16(src, &mut d[start..end]),
        // Encoded by the caller (`staged.rs`).
        StoredMut::Q8 { .. } => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rounds_to_nearest_even() {
        // 1 + 2^-8 lies halfway between two bfloat16 values: ties go to the even one (1).
        let x = [
            1.0 + 2f32.powi(-8),
            1.0 + 3.0 * 2f32.powi(-8),
            -2.5e-3,
            f32::INFINITY,
        ];
        let mut b = [bf16::ZERO; 4];
        let mut stored = StoredMut::<f32>::Bf16(&mut b);
        store(&x, &mut stored, 0);
        let mut back = [0f32; 4];
        load(&stored, 0, &mut back);
        assert_eq!(back[0], 1.0);
        assert_eq!(back[1], 1.0 + 4.0 * 2f32.powi(-8));
        assert_eq!(back[2], bf16::from_f32(-2.5e-3).to_f32());
        assert_eq!(back[3], f32::INFINITY);
        let mut h = [f16::ZERO; 4];
        let mut stored = StoredMut::<f32>::F16(&mut h);
        store(&[1.0 + 2f32.powi(-11), 65504.0, 1e-8, -0.0], &mut stored, 0);
        load(&stored, 0, &mut back);
        assert_eq!(back, [1.0, 65504.0, f16::from_f32(1e-8).to_f32(), -0.0]);
    }
}
