//! One fused step over a piece of a tensor whose state is stored in 8 bits.
//!
//! Per block of [`BLOCK`] elements (see `fused`): each vector of lanes
//! decodes its moments, runs the element update in registers (the float32
//! kernel's operations, in its order, so its bits), stores the param and
//! keeps the new moments and their running absmax; then each moment is
//! encoded. The param update therefore uses the new moments before they are
//! quantized, as bitsandbytes does. A variant the fused loop does not know
//! takes the staged way: decode into buffers, the float32 kernel itself
//! (`kernel_for`), encode.
//!
//! Maps: the first moment and the velocity (any sign) use the signed map;
//! the second moment, AMSGrad's running max and AdaMax's infinity norm (all
//! non-negative) the unsigned one.
//!
//! A piece must start on a block boundary of its tensor (element 0 of the
//! tensor starts block 0) and end on one or at the tensor's end, so that no
//! block is split between pieces; its `absmax` slices hold the absmax of
//! exactly its blocks.

// TODO(lints): cleaned on branch codec/unify
#![allow(unsafe_op_in_unsafe_fn, clippy::undocumented_unsafe_blocks)]

use std::ops::Range;

use crate::error::StepError;
use crate::kernel::{flags, with_variants, Coeffs, Slices};
use crate::scalars::StepScalars;
use crate::simd::{kernel_for, KernelFn, SimdLevel};

use super::codec::{
    abs_max_bits, blocks, check_len, decode_block, encode_block, holds_infinities, run, Codebook,
    Job, BLOCK, SIGNED, UNSIGNED,
};
use super::fused::{step_block, used, BlockState, Splat};
use super::lanes::{Lanes, Scalar};

/// One buffer of 8-bit state: a code per element and an absmax per block.
pub struct Q8State<'a> {
    /// One code per element.
    pub codes: &'a mut [u8],
    /// One absmax per block of the elements.
    pub absmax: &'a mut [f32],
}

/// The buffers of one piece: float32 param and gradient, 8-bit moments.
pub struct Q8Piece<'a> {
    /// The params, updated in place.
    pub param: &'a mut [f32],
    /// Their gradients.
    pub grad: &'a [f32],
    /// The first moment m.
    pub exp_avg: Q8State<'a>,
    /// v for Adam; u, the infinity norm, for AdaMax.
    pub exp_avg_sq: Q8State<'a>,
    /// Required when the variant uses AMSGrad (ignored otherwise).
    pub max_exp_avg_sq: Option<Q8State<'a>>,
    /// Required when the variant uses momentum (ignored otherwise).
    pub velocity: Option<Q8State<'a>>,
}

impl Q8Piece<'_> {
    /// Every length against the param's, and the buffers `variant` needs.
    fn check(&self, variant: u32) -> Result<(), StepError> {
        let n = self.param.len();
        check_len("grad", n, self.grad.len())?;
        let state = |name: &'static str, s: &Q8State<'_>| {
            check_len(name, n, s.codes.len())?;
            check_len(name, blocks(n), s.absmax.len())
        };
        state("exp_avg", &self.exp_avg)?;
        state("exp_avg_sq", &self.exp_avg_sq)?;
        for (flag, name, buffer) in [
            (flags::AMSGRAD, "max_exp_avg_sq", &self.max_exp_avg_sq),
            (flags::MOMENTUM, "velocity", &self.velocity),
        ] {
            if variant & flag != 0 {
                match buffer {
                    Some(s) => state(name, s)?,
                    None => {
                        return Err(StepError::MissingBuffer {
                            index: 0,
                            buffer: name,
                        })
                    }
                }
            }
        }
        Ok(())
    }
}

/// One step of `scalars` over `piece` at `level`; `norm_scale` is the
/// tensor's gradient-norm clipping factor (1 when not clipping by norm).
/// Every check runs before anything is written.
pub fn step_q8(
    level: SimdLevel,
    scalars: &StepScalars,
    norm_scale: f64,
    piece: Q8Piece<'_>,
) -> Result<(), StepError> {
    if !level.is_supported() {
        return Err(StepError::UnsupportedSimd(level.name()));
    }
    let c = scalars.coeffs::<f32>(norm_scale);
    piece.check(c.variant)?;
    run_piece(level, kernel_for(level, &c), &c, piece)
}

/// [`step_q8`] for a caller that has checked the piece and picked the kernel
/// once (the multi-tensor planner).
///
/// The variant is chosen here, before entering the level's function, so that
/// each (level, variant) is a function of its own: its frame holds one
/// variant's locals (a debug build gives every local of every inlined body a
/// slot of its own; one function holding all 20 variants needed 2.5 MiB).
pub(crate) fn run_piece(
    level: SimdLevel,
    kernel: KernelFn<f32>,
    c: &Coeffs<f32>,
    piece: Q8Piece<'_>,
) -> Result<(), StepError> {
    // Every variant `StepScalars::coeffs` builds.
    macro_rules! fused {
        ($($f:expr),+) => {
            match c.variant {
                $(v if v == $f => run(level, Fused::<{ $f }> { kernel, c, piece }),)+
                _ => run(level, Staged { kernel, c, piece }),
            }
        };
    }
    with_variants!(fused!())
}

/// The fused step of variant `F` (`kernel`: the float32 kernel of `F`, for
/// the blocks whose state holds infinities).
struct Fused<'a, const F: u32> {
    kernel: KernelFn<f32>,
    c: &'a Coeffs<f32>,
    piece: Q8Piece<'a>,
}

impl<const F: u32> Job for Fused<'_, F> {
    type Out = ();
    #[inline(always)]
    unsafe fn run<L: Lanes>(self) {
        fused::<L, F>(self.kernel, self.c, self.piece)
    }
}

/// The staged step, for a variant the fused step lacks.
pub(super) struct Staged<'a> {
    pub kernel: KernelFn<f32>,
    pub c: &'a Coeffs<f32>,
    pub piece: Q8Piece<'a>,
}

impl Job for Staged<'_> {
    type Out = ();
    #[inline(always)]
    unsafe fn run<L: Lanes>(self) {
        staged::<L>(self.kernel, self.c, self.piece)
    }
}

/// A state buffer of the current block, on the stack.
struct StagedBuffer<'s, 'b> {
    book: &'static Codebook,
    state: Option<&'s mut Q8State<'b>>,
    buf: [f32; BLOCK],
}

impl<'s, 'b> StagedBuffer<'s, 'b> {
    fn new(book: &'static Codebook, state: Option<&'s mut Q8State<'b>>) -> Self {
        StagedBuffer {
            book,
            state,
            buf: [0.0; BLOCK],
        }
    }

    /// Decode block `b` (elements `start..start + len`); the buffer to step
    /// (empty when the state is off).
    #[inline(always)]
    unsafe fn load<L: Lanes>(&mut self, b: usize, start: usize, len: usize) -> &mut [f32] {
        match &self.state {
            Some(s) => {
                let codes = &s.codes[start..start + len];
                decode_block::<L>(self.book, codes, s.absmax[b], &mut self.buf[..len]);
                &mut self.buf[..len]
            }
            None => &mut [],
        }
    }

    #[inline(always)]
    unsafe fn store<L: Lanes>(&mut self, b: usize, start: usize, len: usize) {
        if let Some(s) = &mut self.state {
            let codes = &mut s.codes[start..start + len];
            let x = &self.buf[..len];
            s.absmax[b] = encode_block::<L>(self.book, x, abs_max_bits::<L>(x), codes);
        }
    }
}

/// The fused step (see `fused`), block by block; a block whose state holds
/// infinities (rare: a finite gradient whose square overflows) goes the
/// staged way, whose decoder knows them.
#[inline(always)]
unsafe fn fused<L: Lanes, const F: u32>(
    kernel: KernelFn<f32>,
    c: &Coeffs<f32>,
    mut piece: Q8Piece<'_>,
) {
    let n = piece.param.len();
    let used = used(F);
    let mut new = [[0f32; BLOCK]; 4];
    let (splat, scalar) = (Splat::<L>::new(c), Splat::<Scalar>::new(c));
    for b in 0..blocks(n) {
        let range = b * BLOCK..n.min((b + 1) * BLOCK);
        let infinite = |s: &Q8State<'_>| holds_infinities(s.absmax[b]);
        if infinite(&piece.exp_avg)
            || infinite(&piece.exp_avg_sq)
            || (used[2] && piece.max_exp_avg_sq.as_ref().is_some_and(infinite))
            || (used[3] && piece.velocity.as_ref().is_some_and(infinite))
        {
            let at = || (range.clone(), b);
            let piece = Q8Piece {
                param: &mut piece.param[range.clone()],
                grad: &piece.grad[range.clone()],
                exp_avg: one_block(&mut piece.exp_avg, at()),
                exp_avg_sq: one_block(&mut piece.exp_avg_sq, at()),
                max_exp_avg_sq: piece.max_exp_avg_sq.as_mut().map(|s| one_block(s, at())),
                velocity: piece.velocity.as_mut().map(|s| one_block(s, at())),
            };
            L::framed(Staged { kernel, c, piece });
            continue;
        }
        let mut state: [Option<BlockState<'_>>; 4] = [None, None, None, None];
        let buffers = [
            Some(&mut piece.exp_avg),
            Some(&mut piece.exp_avg_sq),
            piece.max_exp_avg_sq.as_mut(),
            piece.velocity.as_mut(),
        ];
        for (k, buffer) in buffers.into_iter().enumerate() {
            if let (true, Some(s)) = (used[k], buffer) {
                state[k] = Some(BlockState {
                    codes: &mut s.codes[range.clone()],
                    absmax: &mut s.absmax[b],
                });
            }
        }
        step_block::<L, F>(
            &splat,
            &scalar,
            &mut piece.param[range.clone()],
            &piece.grad[range],
            &mut state,
            &mut new,
        );
    }
}

/// Block `b` (elements `range`) of a state buffer.
fn one_block<'s>(s: &'s mut Q8State<'_>, (range, b): (Range<usize>, usize)) -> Q8State<'s> {
    Q8State {
        codes: &mut s.codes[range],
        absmax: std::slice::from_mut(&mut s.absmax[b]),
    }
}

/// The staged step: decode each moment into a buffer, run the float32
/// kernel on the buffers, encode (for a variant the fused step lacks).
#[inline(always)]
pub(super) unsafe fn staged<L: Lanes>(
    kernel: KernelFn<f32>,
    c: &Coeffs<f32>,
    mut piece: Q8Piece<'_>,
) {
    let on = |flag| c.variant & flag != 0;
    let amsgrad = if on(flags::AMSGRAD) {
        piece.max_exp_avg_sq.as_mut()
    } else {
        None
    };
    let velocity = if on(flags::MOMENTUM) {
        piece.velocity.as_mut()
    } else {
        None
    };
    let mut m = StagedBuffer::new(&SIGNED, Some(&mut piece.exp_avg));
    let mut v = StagedBuffer::new(&UNSIGNED, Some(&mut piece.exp_avg_sq));
    let mut x = StagedBuffer::new(&UNSIGNED, amsgrad);
    let mut u = StagedBuffer::new(&SIGNED, velocity);
    let n = piece.param.len();
    for b in 0..blocks(n) {
        let start = b * BLOCK;
        let len = BLOCK.min(n - start);
        kernel(
            c,
            Slices {
                param: &mut piece.param[start..start + len],
                grad: &piece.grad[start..start + len],
                exp_avg: m.load::<L>(b, start, len),
                exp_avg_sq: v.load::<L>(b, start, len),
                max_exp_avg_sq: x.load::<L>(b, start, len),
                velocity: u.load::<L>(b, start, len),
            },
        );
        m.store::<L>(b, start, len);
        v.store::<L>(b, start, len);
        x.store::<L>(b, start, len);
        u.store::<L>(b, start, len);
    }
}
