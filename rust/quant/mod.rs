//! Building blocks for 8-bit optimizer state and stochastic rounding.
//!
//! * [`map`]: the dynamic tree quantization maps, bit for bit as bitsandbytes builds them.
//! * [`codec`]: blockwise encode/decode (blocks of [`BLOCK`] elements, one
//!   float32 absmax each), per SIMD level, the same bits on every level;
//!   `decades` is its arithmetic nearest-code search for the vector levels.
//! * [`block`]: one fused step over a piece of a tensor whose moments are
//!   stored in 8 bits: decode, the f32 update (`fused`: the kernel's
//!   `step_element` on registers, in `lane_arith`'s operations), absmax, encode.
//! * [`stochastic`]: f32 to bfloat16/float16 with stochastic rounding, the
//!   random bits a counter-based hash of (seed, step, element index).
//!
//! Layering (imports point down only): `map` and `lanes` are numbers and
//! import nothing from the crate (`decades` imports `lanes`); `codec` and
//! `stochastic` are element loops dispatched per SIMD level (they use
//! `simd::SimdLevel` and `error`); `lane_arith` is `arith`'s operations on
//! `lanes`; `fused` is one block's step (`kernel`'s element update and
//! coefficients, in `lane_arith`); `block` steps one piece (and keeps the
//! staged way with `simd`'s f32 kernel) and is what a multi-tensor planner
//! calls per piece. No module outside `quant` imports it.

pub mod block;
pub mod codec;
mod decades;
mod fused;
mod lane_arith;
mod lanes;
pub mod map;
pub mod stochastic;

#[cfg(test)]
pub(crate) mod block_tests;
#[cfg(test)]
mod codec_tests;
#[cfg(test)]
mod decades_tests;
#[cfg(test)]
mod stochastic_tests;

pub(crate) use block::run_piece;
pub use block::{step_q8, Q8Piece, Q8State};
pub use codec::{blocks, decode, encode, Codebook, BLOCK, SIGNED, UNSIGNED};
pub use stochastic::{round_stochastic, Sixteen, StochasticKey};
