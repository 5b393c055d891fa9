//! The fused 8-bit step against a staged reference: the reference decoder,
//! the scalar f32 kernel over the whole tensor, the reference encoder.

use crate::kernel::{flags, Slices};
use crate::kernel_tests::{rules, Rng};
use crate::simd::kernel_for;
use crate::{grad_norm, AdamConfig, SimdLevel, StepError, StepScalars};

use super::block::{step_q8, Q8Piece, Q8State};
use super::codec::{blocks, Codebook, BLOCK, SIGNED, UNSIGNED};
use super::codec_tests::{mismatch, reference_encode};

/// One 8-bit state buffer, owned.
#[derive(Clone, Debug, PartialEq)]
struct Owned8 {
    codes: Vec<u8>,
    absmax: Vec<u32>,
}

impl Owned8 {
    fn encode(book: &Codebook, x: &[f32]) -> Self {
        let (mut codes, mut absmax) = (Vec::new(), Vec::new());
        for block in x.chunks(BLOCK) {
            let (c, a) = reference_encode(book, block);
            codes.extend(c);
            absmax.push(a.to_bits());
        }
        Owned8 { codes, absmax }
    }

    fn decode(&self, book: &Codebook) -> Vec<f32> {
        let absmax = |i: usize| f32::from_bits(self.absmax[i / BLOCK]);
        (self.codes.iter().enumerate())
            .map(|(i, &c)| book.values[c as usize] * absmax(i))
            .collect()
    }
}

/// A tensor with 8-bit state: param and the four state buffers.
#[derive(Clone, Debug, PartialEq)]
struct Tensor8 {
    param: Vec<u32>,
    state: [Owned8; 4],
}

const BOOKS: [&Codebook; 4] = [&SIGNED, &UNSIGNED, &UNSIGNED, &SIGNED];

impl Tensor8 {
    fn new(rng: &mut Rng, n: usize) -> Self {
        let zeros = vec![0f32; n];
        let p: Vec<f32> = rng.vec(n, 1.0);
        Tensor8 {
            param: p.iter().map(|v| v.to_bits()).collect(),
            state: BOOKS.map(|book| Owned8::encode(book, &zeros)),
        }
    }

    fn norm_scale(scalars: &StepScalars, grad: &[f32]) -> f64 {
        if scalars.clips_norm() {
            scalars.norm_scale(grad_norm(grad))
        } else {
            1.0
        }
    }

    /// The staged reference step.
    fn reference_step(&mut self, scalars: &StepScalars, grad: &[f32]) {
        let c = scalars.coeffs::<f32>(Self::norm_scale(scalars, grad));
        let mut param: Vec<f32> = self.param.iter().map(|&b| f32::from_bits(b)).collect();
        let [mut m, mut v, mut x, mut u] = [0, 1, 2, 3].map(|i| self.state[i].decode(BOOKS[i]));
        kernel_for::<f32, f32>(SimdLevel::Scalar, &c)(
            &c,
            Slices {
                param: &mut param,
                grad,
                exp_avg: &mut m,
                exp_avg_sq: &mut v,
                max_exp_avg_sq: &mut x,
                velocity: &mut u,
            },
        );
        self.param = param.iter().map(|v| v.to_bits()).collect();
        // Buffers the variant does not use stay as they were.
        let used = [
            true,
            true,
            c.variant & flags::AMSGRAD != 0,
            c.variant & flags::MOMENTUM != 0,
        ];
        for (i, new) in [m, v, x, u].iter().enumerate() {
            if used[i] {
                self.state[i] = Owned8::encode(BOOKS[i], new);
            }
        }
    }

    fn fused_step(
        &mut self,
        level: SimdLevel,
        scalars: &StepScalars,
        grad: &[f32],
    ) -> Result<(), StepError> {
        let scale = Self::norm_scale(scalars, grad);
        self.with_piece(grad, |piece| step_q8(level, scalars, scale, piece))
    }

    /// `f` on a piece over this tensor's buffers, with `grad` as its gradient.
    fn with_piece<R>(&mut self, grad: &[f32], f: impl FnOnce(Q8Piece<'_>) -> R) -> R {
        let mut param: Vec<f32> = self.param.iter().map(|&b| f32::from_bits(b)).collect();
        let mut absmax: Vec<Vec<f32>> = (self.state.iter())
            .map(|s| s.absmax.iter().map(|&b| f32::from_bits(b)).collect())
            .collect();
        let [m, v, x, u] = &mut self.state;
        let [am, av, ax, au] = &mut absmax[..] else {
            unreachable!()
        };
        let result = f(Q8Piece {
            param: &mut param,
            grad,
            exp_avg: Q8State {
                codes: &mut m.codes,
                absmax: am,
            },
            exp_avg_sq: Q8State {
                codes: &mut v.codes,
                absmax: av,
            },
            max_exp_avg_sq: Some(Q8State {
                codes: &mut x.codes,
                absmax: ax,
            }),
            velocity: Some(Q8State {
                codes: &mut u.codes,
                absmax: au,
            }),
        });
        self.param = param.iter().map(|v| v.to_bits()).collect();
        for (s, a) in self.state.iter_mut().zip(&absmax) {
            s.absmax = a.iter().map(|v| v.to_bits()).collect();
        }
        result
    }
}

/// One configuration per kernel flag and rule, with clipping and decay.
pub(crate) fn configs() -> Vec<AdamConfig> {
    let [base, adamax, nadam, radam] = rules();
    vec![
        base,
        AdamConfig {
            weight_decay: 0.1,
            decoupled_weight_decay: true,
            ..base
        },
        AdamConfig {
            weight_decay: 0.1,
            amsgrad: true,
            ..base
        },
        AdamConfig {
            momentum: 0.9,
            nesterov: true,
            max_gradient_norm: 1.5,
            ..base
        },
        AdamConfig {
            maximize: true,
            max_gradient_elem: 0.3,
            grad_scale: 4.0,
            ..base
        },
        AdamConfig {
            momentum: 0.5,
            ..adamax
        },
        nadam,
        radam,
    ]
}

/// Gradients with a different scale per block (the absmax matters) and zeros.
fn grads(rng: &mut Rng, n: usize) -> Vec<f32> {
    (0..n)
        .map(|i| {
            let scale = 10f64.powi((i / BLOCK) as i32 % 5 - 3);
            let g = rng.next_f64() * scale;
            if i % 11 == 5 {
                0.0
            } else {
                g as f32
            }
        })
        .collect()
}

#[test]
fn fused_step_matches_the_staged_reference_bit_for_bit_on_every_level() {
    for cfg in configs() {
        for &n in &[1usize, 255, 256, 257, 3 * BLOCK + 5, 4095, 4096, 4097] {
            let mut rng = Rng(n as u64 + 1);
            let start = Tensor8::new(&mut rng, n);
            let grads: Vec<Vec<f32>> = (0..6).map(|_| grads(&mut rng, n)).collect();
            let mut want = start.clone();
            for (t, g) in grads.iter().enumerate() {
                want.reference_step(&StepScalars::new(&cfg, t as u64 + 1).unwrap(), g);
            }
            for level in SimdLevel::supported() {
                let mut got = start.clone();
                for (t, g) in grads.iter().enumerate() {
                    let scalars = StepScalars::new(&cfg, t as u64 + 1).unwrap();
                    got.fused_step(level, &scalars, g).unwrap();
                }
                assert!(got == want, "{cfg:?} n={n} {level}");
            }
            assert_ne!(want, start, "the steps changed something");
        }
    }
}

#[test]
fn pieces_cut_on_block_boundaries_give_the_same_bits() {
    let cfg = AdamConfig {
        amsgrad: true,
        momentum: 0.5,
        ..Default::default()
    };
    let n = 5 * BLOCK + 3;
    let mut rng = Rng(5);
    let mut whole = Tensor8::new(&mut rng, n);
    let g = grads(&mut rng, n);
    let mut cut = whole.clone();
    let scalars = StepScalars::new(&cfg, 1).unwrap();
    whole.fused_step(SimdLevel::detect(), &scalars, &g).unwrap();
    // Steps of pieces [0, 2 blocks) and [2 blocks, n) of the same buffers.
    let mut param: Vec<f32> = cut.param.iter().map(|&b| f32::from_bits(b)).collect();
    let mut absmax: Vec<Vec<f32>> = (cut.state.iter())
        .map(|s| s.absmax.iter().map(|&b| f32::from_bits(b)).collect())
        .collect();
    let at = 2 * BLOCK;
    {
        let (p0, p1) = param.split_at_mut(at);
        let mut codes = cut.state.iter_mut().map(|s| s.codes.split_at_mut(at));
        let mut scales = absmax.iter_mut().map(|a| a.split_at_mut(2));
        let mut pieces = [(p0, &g[..at], Vec::new()), (p1, &g[at..], Vec::new())];
        for _ in 0..4 {
            let ((c0, c1), (a0, a1)) = (codes.next().unwrap(), scales.next().unwrap());
            pieces[0].2.push(Q8State {
                codes: c0,
                absmax: a0,
            });
            pieces[1].2.push(Q8State {
                codes: c1,
                absmax: a1,
            });
        }
        for (param, grad, state) in pieces {
            let [m, v, x, u] = <[Q8State; 4]>::try_from(state).ok().unwrap();
            let piece = Q8Piece {
                param,
                grad,
                exp_avg: m,
                exp_avg_sq: v,
                max_exp_avg_sq: Some(x),
                velocity: Some(u),
            };
            step_q8(SimdLevel::detect(), &scalars, 1.0, piece).unwrap();
        }
    }
    cut.param = param.iter().map(|v| v.to_bits()).collect();
    for (s, a) in cut.state.iter_mut().zip(&absmax) {
        s.absmax = a.iter().map(|v| v.to_bits()).collect();
    }
    assert_eq!(cut, whole);
}

#[test]
fn a_nonfinite_moment_poisons_its_block_only() {
    let n = 3 * BLOCK;
    let mut rng = Rng(9);
    let mut t = Tensor8::new(&mut rng, n);
    let mut g = grads(&mut rng, n);
    g[BLOCK + 17] = f32::NAN;
    let scalars = StepScalars::new(&AdamConfig::default(), 1).unwrap();
    t.fused_step(SimdLevel::detect(), &scalars, &g).unwrap();
    for s in &t.state[..2] {
        let absmax: Vec<f32> = s.absmax.iter().map(|&b| f32::from_bits(b)).collect();
        assert!(absmax[0].is_finite() && absmax[1].is_nan() && absmax[2].is_finite());
    }
    // The param of the NaN gradient is NaN (as with float32 state); the next
    // step spreads NaN over that block's params, and no further.
    assert!(f32::from_bits(t.param[BLOCK + 17]).is_nan());
    g[BLOCK + 17] = 0.5;
    t.fused_step(
        SimdLevel::detect(),
        &StepScalars::new(&AdamConfig::default(), 2).unwrap(),
        &g,
    )
    .unwrap();
    let p: Vec<f32> = t.param.iter().map(|&b| f32::from_bits(b)).collect();
    assert!(p[BLOCK..2 * BLOCK].iter().all(|v| v.is_nan()));
    assert!(p[..BLOCK]
        .iter()
        .chain(&p[2 * BLOCK..])
        .all(|v| v.is_finite()));
}

#[test]
fn bad_pieces_are_errors_that_write_nothing() {
    let n = 300;
    let mut rng = Rng(1);
    let start = Tensor8::new(&mut rng, n);
    let g = grads(&mut rng, n);
    let amsgrad = StepScalars::new(
        &AdamConfig {
            amsgrad: true,
            ..Default::default()
        },
        1,
    )
    .unwrap();
    let plain = StepScalars::new(&AdamConfig::default(), 1).unwrap();
    let mut t = start.clone();
    let mut p: Vec<f32> = vec![1.0; n];
    let mut absmax = vec![vec![2f32; blocks(n)]; 4];
    let [m, v, x, _] = &mut t.state;
    let [am, av, ax, _] = &mut absmax[..] else {
        unreachable!()
    };
    let mut try_step = |scalars: &StepScalars,
                        grad: &[f32],
                        cut_codes: usize,
                        cut_absmax: usize,
                        with_max: bool| {
        step_q8(
            SimdLevel::Scalar,
            scalars,
            1.0,
            Q8Piece {
                param: &mut p,
                grad,
                exp_avg: Q8State {
                    codes: &mut m.codes[cut_codes..],
                    absmax: &mut am[cut_absmax..],
                },
                exp_avg_sq: Q8State {
                    codes: &mut v.codes,
                    absmax: av,
                },
                max_exp_avg_sq: with_max.then(|| Q8State {
                    codes: &mut x.codes,
                    absmax: &mut ax[..],
                }),
                velocity: None,
            },
        )
    };
    assert_eq!(
        try_step(&plain, &g[1..], 0, 0, false),
        Err(mismatch("grad", n, n - 1))
    );
    assert_eq!(
        try_step(&plain, &g, 1, 0, false),
        Err(mismatch("exp_avg", n, n - 1))
    );
    assert_eq!(
        try_step(&plain, &g, 0, 1, false),
        Err(mismatch("exp_avg", 2, 1))
    );
    assert_eq!(
        try_step(&amsgrad, &g, 0, 0, false),
        Err(StepError::MissingBuffer {
            index: 0,
            buffer: "max_exp_avg_sq"
        })
    );
    assert!(p.iter().all(|&v| v == 1.0));
    assert!(absmax.iter().flatten().all(|&a| a == 2.0));
    assert_eq!(t.state, start.state);
}

/// All 20 kernel variants as the scalars of `base`'s step: each rule with and
/// without L2 and momentum, and the Adam rule with AMSGrad.
pub(crate) fn every_variant(base: StepScalars) -> Vec<StepScalars> {
    use crate::Rule;
    let mut variants = Vec::new();
    for rule in [Rule::Adam, Rule::Adamax, Rule::NAdam, Rule::Unadapted] {
        for amsgrad in [false, true] {
            if amsgrad && rule != Rule::Adam {
                continue;
            }
            for (l2, velocity) in [(0.0, false), (0.05, false), (0.0, true), (0.05, true)] {
                variants.push(StepScalars {
                    rule,
                    amsgrad,
                    l2,
                    velocity,
                    nadam_grad: if rule == Rule::NAdam { 2e-3 } else { 0.0 },
                    ..base
                });
            }
        }
    }
    variants
}

/// The staged step (decode into buffers, the float32 kernel, encode), run
/// through the same dispatch as the fused one.
#[test]
fn every_variant_steps_as_the_staged_kernel_does() {
    let cfg = AdamConfig {
        lr: 1e-2,
        momentum: 0.7,
        ..Default::default()
    };
    let variants = every_variant(StepScalars::new(&cfg, 2).unwrap());
    assert_eq!(variants.len(), 20);
    let mut seen = std::collections::HashSet::new();
    for scalars in variants {
        for &n in &[BLOCK + 13, 2 * BLOCK] {
            let mut rng = Rng(n as u64 + 17);
            let mut start = Tensor8::new(&mut rng, n);
            // Nonzero moments to start from: one reference step.
            start.reference_step(&StepScalars::new(&cfg, 1).unwrap(), &grads(&mut rng, n));
            let g = grads(&mut rng, n);
            let c = scalars.coeffs::<f32>(1.0);
            seen.insert(c.variant);
            for level in SimdLevel::supported() {
                let (mut fused, mut staged) = (start.clone(), start.clone());
                fused.fused_step(level, &scalars, &g).unwrap();
                staged.with_piece(&g, |piece| {
                    let kernel = kernel_for::<f32, f32>(SimdLevel::Scalar, &c);
                    super::codec::run(
                        level,
                        super::block::Staged {
                            kernel,
                            c: &c,
                            piece,
                        },
                    )
                    .unwrap()
                });
                assert!(fused == staged, "variant {} n={n} {level}", c.variant);
                assert_ne!(fused, start);
            }
        }
    }
    assert_eq!(seen.len(), 20);
}
