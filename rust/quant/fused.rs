//! The fused 8-bit step over one block, in registers: each vector of the
//! block decodes its moments, runs the element update, stores the param and
//! keeps the new moments (in an L1 buffer, for the encoder) with their
//! running absmax; then each moment is encoded from that buffer.
//!
//! The element update is the float kernel's own `kernel::step_element`, run
//! on a vector of lanes ([`OnLevel`]'s arithmetic) and, for the block's
//! tail, on plain f32: the same operations in the same order, so the float32
//! kernel's bits on every level. The tests hold the fused step against the
//! float32 kernel run on decoded state.

use crate::arith::{Arith, Plain};
use crate::kernel::{flags, step_element, Coeffs};

use super::codec::{encode_block, Codebook, BLOCK, SIGNED, UNSIGNED};
use super::lane_arith::OnLevel;
use super::lanes::Lanes;

/// One 8-bit state buffer of a block: its codes and its absmax.
pub(super) struct BlockState<'a> {
    pub codes: &'a mut [u8],
    pub absmax: &'a mut f32,
}

/// The maps of `[exp_avg, exp_avg_sq, max_exp_avg_sq, velocity]`: signed
/// for the first moment and the velocity, unsigned for the others.
const BOOKS: [&Codebook; 4] = [&SIGNED, &UNSIGNED, &UNSIGNED, &SIGNED];

/// Which of the four state buffers variant `F` uses.
pub(super) const fn used(variant: u32) -> [bool; 4] {
    [
        true,
        true,
        variant & flags::AMSGRAD != 0,
        variant & flags::MOMENTUM != 0,
    ]
}

/// Step one block (at most [`BLOCK`] elements) with variant `F`: `coeffs`
/// are `c` in every lane; `state` holds the buffers `used(F)` names (the
/// others are ignored); `new` is room for the new moments.
///
/// # Safety
/// `grad` and the codes of each buffer in `state` hold `param.len()`
/// elements, at most [`BLOCK`].
#[inline(always)]
pub(super) unsafe fn step_block<L: Lanes, const F: u32>(
    lanes: OnLevel<L>,
    coeffs: &Coeffs<L::F>,
    c: &Coeffs<f32>,
    param: &mut [f32],
    grad: &[f32],
    state: &mut [Option<BlockState<'_>>; 4],
    new: &mut [[f32; BLOCK]; 4],
) {
    let use_ = used(F);
    let n = param.len();
    debug_assert!(n <= BLOCK && grad.len() == n);
    let mut scales = [0f32; 4];
    for k in 0..4 {
        if let Some(s) = &state[k] {
            debug_assert_eq!(s.codes.len(), n);
            scales[k] = *s.absmax;
        }
    }
    let mut largest = [lanes.zero_bits(); 4];
    let mut i = 0;
    while i + L::N <= n {
        // The loads and stores each touch elements i..i + L::N: below n,
        // which param, grad, each state's codes (this function's contract)
        // and `new` hold; `lanes` says this runs where `L`'s instructions may.
        let mut old = [lanes.splat(0.0); 5];
        // SAFETY: see above.
        old[0] = unsafe { L::load(param.as_ptr().add(i)) };
        for k in 0..4 {
            if use_[k] {
                if let Some(s) = &state[k] {
                    // SAFETY: see above; a code indexes the map's 256 values.
                    let v = unsafe { L::lookup(BOOKS[k].values.as_ptr(), s.codes.as_ptr().add(i)) };
                    old[k + 1] = lanes.mul(v, lanes.splat(scales[k]));
                }
            }
        }
        // SAFETY: see above.
        let g = unsafe { L::load(grad.as_ptr().add(i)) };
        let out = step_element::<_, F>(lanes, coeffs, g, old);
        // SAFETY: see above.
        unsafe { L::store(param.as_mut_ptr().add(i), out[0]) };
        for k in 0..4 {
            if use_[k] {
                // SAFETY: see above.
                unsafe { L::store(new[k].as_mut_ptr().add(i), out[k + 1]) };
                largest[k] = lanes.max_magnitude_bits(largest[k], out[k + 1]);
            }
        }
        i += L::N;
    }
    let mut largest = largest.map(|l| lanes.reduce_max(l));
    while i < n {
        let mut old = [0f32; 5];
        old[0] = param[i];
        for k in 0..4 {
            if use_[k] {
                if let Some(s) = &state[k] {
                    old[k + 1] = BOOKS[k].values[s.codes[i] as usize] * scales[k];
                }
            }
        }
        let out = step_element::<_, F>(Plain::new(), c, grad[i], old);
        param[i] = out[0];
        for k in 0..4 {
            if use_[k] {
                new[k][i] = out[k + 1];
                largest[k] = largest[k].max(out[k + 1].to_bits() & 0x7fff_ffff);
            }
        }
        i += 1;
    }
    for k in 0..4 {
        if use_[k] {
            if let Some(s) = &mut state[k] {
                // SAFETY: `lanes` says this runs where `L`'s instructions may.
                *s.absmax =
                    unsafe { encode_block::<L>(BOOKS[k], &new[k][..n], largest[k], s.codes) };
            }
        }
    }
}
