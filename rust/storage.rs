//! Reduced-precision storage: tensors kept as bfloat16 or float16 and
//! computed in f32.
//!
//! The kernel itself only sees f32. A piece whose buffers are stored in a
//! 16-bit type is processed in blocks of [`BLOCK`] elements: each block is
//! widened into f32 buffers on the stack, stepped, and rounded back to nearest
//! even (the `half` crate's conversions, which use F16C where the CPU has it).
//! Rounding is exact IEEE, so the result does not depend on the SIMD level.

use half::{bf16, f16};

use crate::element::Float;
use crate::kernel::Slices;
use crate::multi::Piece;
use crate::scalars::Coeffs;
use crate::simd::KernelFn;

/// Elements per staged block: six f32 buffers of this size fit in L1.
pub(crate) const BLOCK: usize = 256;

/// A mutable buffer as it is stored.
pub enum StoredMut<'a, T> {
    /// Stored as the compute type itself: no staging.
    Native(&'a mut [T]),
    /// Stored as bfloat16, widened into `T` for the arithmetic.
    Bf16(&'a mut [bf16]),
    /// Stored as IEEE float16, widened into `T` for the arithmetic.
    F16(&'a mut [f16]),
}

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

impl<'a, T> StoredMut<'a, T> {
    pub(crate) fn kind(&self) -> Kind {
        match self {
            StoredMut::Native(_) => Kind::Native,
            StoredMut::Bf16(_) => Kind::Bf16,
            StoredMut::F16(_) => Kind::F16,
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

    /// The number of elements.
    pub fn len(&self) -> usize {
        match self {
            StoredMut::Native(s) => s.len(),
            StoredMut::Bf16(s) => s.len(),
            StoredMut::F16(s) => s.len(),
        }
    }

    /// No elements.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// [`to_line_boundary`] of the buffer, whatever it is stored as.
    pub(crate) fn to_line_boundary(&self) -> usize {
        match self {
            StoredMut::Native(s) => to_line_boundary(s),
            StoredMut::Bf16(s) => to_line_boundary(s),
            StoredMut::F16(s) => to_line_boundary(s),
        }
    }

    /// Split like `split_at_mut`, clamping `mid` to the length (empty buffers stay empty).
    pub(crate) fn split_at(self, mid: usize) -> (Self, Self) {
        match self {
            StoredMut::Native(s) => {
                let (a, b) = s.split_at_mut(mid.min(s.len()));
                (StoredMut::Native(a), StoredMut::Native(b))
            }
            StoredMut::Bf16(s) => {
                let (a, b) = s.split_at_mut(mid.min(s.len()));
                (StoredMut::Bf16(a), StoredMut::Bf16(b))
            }
            StoredMut::F16(s) => {
                let (a, b) = s.split_at_mut(mid.min(s.len()));
                (StoredMut::F16(a), StoredMut::F16(b))
            }
        }
    }
}

impl<'a, T> Stored<'a, T> {
    /// The number of elements.
    pub fn len(&self) -> usize {
        match self {
            Stored::Native(s) => s.len(),
            Stored::Bf16(s) => s.len(),
            Stored::F16(s) => s.len(),
        }
    }

    /// No elements.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub(crate) fn split_at(self, mid: usize) -> (Self, Self) {
        match self {
            Stored::Native(s) => {
                let (a, b) = s.split_at(mid);
                (Stored::Native(a), Stored::Native(b))
            }
            Stored::Bf16(s) => {
                let (a, b) = s.split_at(mid);
                (Stored::Bf16(a), Stored::Bf16(b))
            }
            Stored::F16(s) => {
                let (a, b) = s.split_at(mid);
                (Stored::F16(a), Stored::F16(b))
            }
        }
    }
}

impl<'a, T> Default for StoredMut<'a, T> {
    fn default() -> Self {
        StoredMut::Native(&mut [])
    }
}

/// Widen `src[start..start + dst.len()]` into `dst`.
fn load<T: Float>(src: &StoredMut<'_, T>, start: usize, dst: &mut [T]) {
    if dst.is_empty() {
        return; // a buffer that is off
    }
    let end = start + dst.len();
    match src {
        StoredMut::Native(s) => dst.copy_from_slice(&s[start..end]),
        StoredMut::Bf16(s) => T::widen_bf16(&s[start..end], dst),
        StoredMut::F16(s) => T::widen_f16(&s[start..end], dst),
    }
}

fn load_grad<T: Float>(src: &Stored<'_, T>, start: usize, dst: &mut [T]) {
    let end = start + dst.len();
    match src {
        Stored::Native(s) => dst.copy_from_slice(&s[start..end]),
        Stored::Bf16(s) => T::widen_bf16(&s[start..end], dst),
        Stored::F16(s) => T::widen_f16(&s[start..end], dst),
    }
}

/// Round `src` back into `dst[start..]`, to nearest even.
fn store<T: Float>(src: &[T], dst: &mut StoredMut<'_, T>, start: usize) {
    if src.is_empty() {
        return; // a buffer that is off
    }
    let end = start + src.len();
    match dst {
        StoredMut::Native(d) => d[start..end].copy_from_slice(src),
        StoredMut::Bf16(d) => T::narrow_bf16(src, &mut d[start..end]),
        StoredMut::F16(d) => T::narrow_f16(src, &mut d[start..end]),
    }
}

/// Run `kernel` over a piece with 16-bit buffers, a block at a time.
///
/// Every buffer of the block is widened into a stack buffer (native ones are
/// copied too: simpler, and cheap next to the conversions), stepped, and
/// written back. With a master copy, the master is what the kernel updates and
/// the param receives it rounded.
pub(crate) fn run_staged<T: Float>(kernel: KernelFn<T>, c: &Coeffs<T>, mut piece: Piece<'_, T>) {
    let n = piece.len();
    let amsgrad = !piece.max_exp_avg_sq.is_empty();
    let momentum = !piece.velocity.is_empty();
    let mut bufs = [[T::ZERO; BLOCK]; 6];
    let mut start = 0;
    while start < n {
        let len = BLOCK.min(n - start);
        let [p, g, m, v, x, u] = &mut bufs;
        let (p, g, m, v) = (&mut p[..len], &mut g[..len], &mut m[..len], &mut v[..len]);
        let x = &mut x[..if amsgrad { len } else { 0 }];
        let u = &mut u[..if momentum { len } else { 0 }];
        let master = if piece.master.is_empty() {
            load(&piece.param, start, p);
            None
        } else {
            Some(&mut piece.master[start..start + len])
        };
        load_grad(&piece.grad, start, g);
        load(&piece.exp_avg, start, m);
        load(&piece.exp_avg_sq, start, v);
        load(&piece.max_exp_avg_sq, start, x);
        load(&piece.velocity, start, u);
        let param: &mut [T] = match master {
            Some(w) => w,
            None => p,
        };
        kernel(
            c,
            Slices {
                param: &mut *param,
                grad: g,
                exp_avg: m,
                exp_avg_sq: v,
                max_exp_avg_sq: x,
                velocity: u,
            },
        );
        store(param, &mut piece.param, start);
        store(m, &mut piece.exp_avg, start);
        store(v, &mut piece.exp_avg_sq, start);
        store(x, &mut piece.max_exp_avg_sq, start);
        store(u, &mut piece.velocity, start);
        start += len;
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
