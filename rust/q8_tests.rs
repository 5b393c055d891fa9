//! 8-bit state through the multi-tensor step (`StoredMut::Q8`): the fused
//! block step for float32 params, the staged way for 16-bit params and
//! master copies, cut into units and run on any number of threads. Each is
//! held bit for bit against a reference that decodes the whole state, runs
//! the scalar float32 kernel and encodes it again.

use half::bf16;

use crate::kernel::{flags, Slices};
use crate::kernel_tests::Rng;
use crate::multi::CHUNK;
use crate::quant::stochastic::bf16_bits;
use crate::quant::{decode, encode, Codebook, StochasticKey, BLOCK, SIGNED, UNSIGNED};
use crate::simd::kernel_for;
use crate::storage::{Stored, StoredMut};
use crate::tensor::{MixedTensorMut, State, Tensor};
use crate::{step_tensors_with, AdamConfig, SimdLevel, StepError, StepScalars};

/// The maps of exp_avg, exp_avg_sq, max_exp_avg_sq and velocity.
const BOOKS: [&Codebook; 4] = [&SIGNED, &UNSIGNED, &UNSIGNED, &SIGNED];

/// How a test tensor's param is stored.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Param {
    F32,
    Bf16,
    Bf16Master,
}

/// A tensor with 8-bit state, owned: params as bits, codes and absmax.
#[derive(Clone, Debug, PartialEq)]
struct Owned {
    kind: Param,
    /// f32 bits, or bf16 bits widened.
    param: Vec<u32>,
    master: Vec<f32>,
    codes: [Vec<u8>; 4],
    absmax: [Vec<f32>; 4],
}

impl Owned {
    fn new(rng: &mut Rng, n: usize, kind: Param) -> Self {
        let p: Vec<f32> = rng.vec(n, 1.0);
        let param = match kind {
            Param::F32 => p.iter().map(|x| x.to_bits()).collect(),
            _ => p
                .iter()
                .map(|&x| u32::from(bf16::from_f32(x).to_bits()))
                .collect(),
        };
        let master = if kind == Param::Bf16Master {
            p.iter().map(|&x| bf16::from_f32(x).to_f32()).collect()
        } else {
            Vec::new()
        };
        Owned {
            kind,
            param,
            master,
            codes: std::array::from_fn(|_| vec![0; n]),
            absmax: std::array::from_fn(|_| vec![0.0; n.div_ceil(BLOCK)]),
        }
    }

    fn params_f32(&self) -> Vec<f32> {
        match self.kind {
            Param::F32 => self.param.iter().map(|&b| f32::from_bits(b)).collect(),
            _ => (self.param.iter())
                .map(|&b| bf16::from_bits(b as u16).to_f32())
                .collect(),
        }
    }

    /// The reference: decode everything, the scalar f32 kernel, encode.
    fn reference_step(&mut self, scalars: &StepScalars, grad: &[f32]) {
        let scale = if scalars.clips_norm() {
            let g: Vec<f32> = match self.kind {
                Param::F32 => grad.to_vec(),
                _ => grad.iter().map(|&x| bf16::from_f32(x).to_f32()).collect(),
            };
            scalars.norm_scale(crate::grad_norm(&g))
        } else {
            1.0
        };
        let c = scalars.coeffs::<f32>(scale);
        let mut state: [Vec<f32>; 4] = std::array::from_fn(|k| decoded(self, k));
        let grad: Vec<f32> = match self.kind {
            Param::F32 => grad.to_vec(),
            _ => grad.iter().map(|&x| bf16::from_f32(x).to_f32()).collect(),
        };
        let mut param = match self.kind {
            Param::Bf16Master => self.master.clone(),
            _ => self.params_f32(),
        };
        let [m, v, x, u] = &mut state;
        kernel_for::<f32, f32>(SimdLevel::Scalar, &c)(
            &c,
            Slices {
                param: &mut param,
                grad: &grad,
                exp_avg: m,
                exp_avg_sq: v,
                max_exp_avg_sq: if c.variant & flags::AMSGRAD != 0 {
                    x
                } else {
                    &mut []
                },
                velocity: if c.variant & flags::MOMENTUM != 0 {
                    u
                } else {
                    &mut []
                },
            },
        );
        match self.kind {
            Param::F32 => self.param = param.iter().map(|x| x.to_bits()).collect(),
            Param::Bf16 | Param::Bf16Master => {
                self.param = (param.iter())
                    .map(|&x| u32::from(bf16::from_f32(x).to_bits()))
                    .collect();
                if self.kind == Param::Bf16Master {
                    self.master = param;
                }
            }
        }
        let used = [
            true,
            true,
            c.variant & flags::AMSGRAD != 0,
            c.variant & flags::MOMENTUM != 0,
        ];
        for k in 0..4 {
            if used[k] {
                let (codes, absmax) = (&mut self.codes[k], &mut self.absmax[k]);
                encode(SimdLevel::Scalar, BOOKS[k], &state[k], codes, absmax).unwrap();
            }
        }
    }
}

fn q8<'a>(codes: &'a mut [u8], absmax: &'a mut [f32]) -> StoredMut<'a, f32> {
    StoredMut::Q8 { codes, absmax }
}

/// One step of `tensors` through `step_tensors_with` at `level`.
fn run(
    level: SimdLevel,
    scalars: &StepScalars,
    tensors: &mut [Owned],
    grads: &[Vec<f32>],
    params: &mut [Vec<f32>],
    halves: &mut [Vec<bf16>],
    grads16: &[Vec<bf16>],
) -> Result<(), StepError> {
    // Params into their holders.
    for ((t, p), h) in tensors.iter().zip(params.iter_mut()).zip(halves.iter_mut()) {
        match t.kind {
            Param::F32 => *p = t.params_f32(),
            _ => *h = t.param.iter().map(|&b| bf16::from_bits(b as u16)).collect(),
        }
    }
    let mut views: Vec<MixedTensorMut<'_, f32>> = Vec::new();
    for (((t, g), (p, h)), g16) in tensors
        .iter_mut()
        .zip(grads)
        .zip(params.iter_mut().zip(halves.iter_mut()))
        .zip(grads16)
    {
        let [c0, c1, c2, c3] = &mut t.codes;
        let [a0, a1, a2, a3] = &mut t.absmax;
        let state = State::new(q8(c0, a0), q8(c1, a1), Some(q8(c2, a2)), Some(q8(c3, a3)));
        let (param, grad) = match t.kind {
            Param::F32 => (StoredMut::Native(&mut p[..]), Stored::Native(&g[..])),
            _ => (StoredMut::Bf16(&mut h[..]), Stored::Bf16(&g16[..])),
        };
        let mut view = Tensor::new(param, grad, state, 0);
        if t.kind == Param::Bf16Master {
            view.master_param = Some(StoredMut::Native(&mut t.master[..]));
        }
        views.push(view);
    }
    step_tensors_with(level, views, std::slice::from_ref(scalars))?;
    for ((t, p), h) in tensors.iter_mut().zip(params.iter()).zip(halves.iter()) {
        match t.kind {
            Param::F32 => t.param = p.iter().map(|x| x.to_bits()).collect(),
            _ => t.param = h.iter().map(|x| u32::from(x.to_bits())).collect(),
        }
    }
    Ok(())
}

/// A pool of `threads` threads, for running a step on that many.
fn pool(threads: usize) -> rayon::ThreadPool {
    rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build()
        .unwrap()
}

/// Every tensor of `sizes` (each param kind in turn) stepped 3 times at
/// every level and on 1, 2 and 3 threads, against the reference.
fn check(sizes: &[usize], cfg: &AdamConfig) {
    let kinds = [Param::F32, Param::Bf16, Param::Bf16Master];
    let mut rng = Rng(sizes.iter().sum::<usize>() as u64);
    let start: Vec<Owned> = (sizes.iter().enumerate())
        .map(|(i, &n)| Owned::new(&mut rng, n, kinds[i % 3]))
        .collect();
    let grads: Vec<Vec<Vec<f32>>> = (0..3)
        .map(|_| {
            sizes
                .iter()
                .map(|&n| {
                    let v: Vec<f32> = rng.vec(n, 1.0);
                    // A different scale per block, so each absmax matters.
                    let scaled = v.iter().enumerate();
                    scaled
                        .map(|(i, &g)| g * 10f32.powi((i / BLOCK) as i32 % 4 - 2))
                        .collect()
                })
                .collect()
        })
        .collect();
    let grads16: Vec<Vec<Vec<bf16>>> = (grads.iter())
        .map(|gs| {
            (gs.iter())
                .map(|g| g.iter().map(|&x| bf16::from_f32(x)).collect())
                .collect()
        })
        .collect();
    let scalars: Vec<StepScalars> = (1..=3).map(|t| StepScalars::new(cfg, t).unwrap()).collect();
    let mut want = start.clone();
    for (s, g) in scalars.iter().zip(&grads) {
        for (t, g) in want.iter_mut().zip(g) {
            t.reference_step(s, g);
        }
    }
    assert!(want != start, "the steps changed something");
    for level in SimdLevel::supported() {
        for threads in [1, 2, 3] {
            let pool = pool(threads);
            let mut got = start.clone();
            let mut params = vec![Vec::new(); sizes.len()];
            let mut halves = vec![Vec::new(); sizes.len()];
            pool.install(|| {
                for (k, s) in scalars.iter().enumerate() {
                    let g = &grads[k];
                    run(level, s, &mut got, g, &mut params, &mut halves, &grads16[k]).unwrap();
                }
            });
            for (i, (g, w)) in got.iter().zip(&want).enumerate() {
                assert!(
                    g == w,
                    "{cfg:?} {level} threads={threads} tensor {i} ({:?}, n={})",
                    g.kind,
                    sizes[i]
                );
            }
        }
    }
}

#[test]
fn eight_bit_state_matches_the_reference_on_every_level_and_thread_count() {
    // One configuration per kernel flag and rule, with clipping, decay and grad_scale.
    for cfg in crate::quant::block_tests::configs() {
        // Block tails, tensors around 4096, and a step large enough to be cut into
        // units and shared between threads.
        check(&[1, 255, 257, 4095, 4096, 4097, 3 * BLOCK + 5], &cfg);
        check(&[CHUNK * 3 + 17, 70_001, 4097], &cfg);
    }
}

/// The two moments of a tensor in 8 bits, from their codes and absmax arrays.
pub(crate) fn q8_state<'a>(
    codes: &'a mut [Vec<u8>; 2],
    absmax: &'a mut [Vec<f32>; 2],
) -> State<StoredMut<'a, f32>> {
    let ([c0, c1], [a0, a1]) = (codes, absmax);
    let q8 = |codes: &'a mut Vec<u8>, absmax: &'a mut Vec<f32>| StoredMut::Q8 {
        codes: &mut codes[..],
        absmax: &mut absmax[..],
    };
    State::new(q8(c0, a0), q8(c1, a1), None, None)
}

#[test]
fn a_misfit_absmax_is_an_error_that_writes_nothing() {
    let n = 600; // three blocks
    let mut p = vec![1f32; n];
    let g = vec![0.5f32; n];
    let (mut codes, mut absmax) = ([vec![7u8; n], vec![7u8; n]], [vec![1f32; 3], vec![1f32; 2]]);
    let state = q8_state(&mut codes, &mut absmax);
    let t: MixedTensorMut<'_, f32> = Tensor::new(
        StoredMut::Native(&mut p[..]),
        Stored::Native(&g[..]),
        state,
        0,
    );
    let scalars = [StepScalars::new(&AdamConfig::default(), 1).unwrap()];
    let err = step_tensors_with(SimdLevel::Scalar, vec![t], &scalars).unwrap_err();
    assert_eq!(
        err,
        StepError::LengthMismatch {
            index: 0,
            buffer: "exp_avg_sq_absmax",
            expected: 3,
            got: 2
        }
    );
    assert!(p.iter().all(|&x| x == 1.0));
    assert!(codes.iter().all(|c| c.iter().all(|&x| x == 7)));
}

#[test]
fn eight_bit_state_with_stochastic_rounding_is_the_master_step_rounded_at_every_level_and_thread_count(
) {
    // bfloat16 params rounded stochastically with 8-bit state (the staged way does
    // both): each step's codes and absmax are those of the same step on an f32
    // master copy, and each param that master's result rounded with the bits of
    // (seed, step, tensor position, element index); every level and thread count
    // gives the same bytes.
    let sizes = [CHUNK * 3 + 17, 4096, 70_001, 5000];
    let mut rng = Rng(21);
    let start: Vec<Owned> = (sizes.iter())
        .map(|&n| Owned::new(&mut rng, n, Param::Bf16))
        .collect();
    let grads: Vec<Vec<f32>> = sizes.iter().map(|&n| rng.vec(n, 1.0)).collect();
    let grads16: Vec<Vec<bf16>> = (grads.iter())
        .map(|g| g.iter().map(|&x| bf16::from_f32(x)).collect())
        .collect();
    let seed = 0x5eed_0000_0001;
    let cfg = AdamConfig {
        lr: 3e-3,
        weight_decay: 0.1,
        stochastic_rounding: true,
        rounding_seed: seed,
        ..Default::default()
    };
    let scalars: Vec<StepScalars> = (1..=2)
        .map(|t| StepScalars::new(&cfg, t).unwrap())
        .collect();
    let steps = |level: SimdLevel| {
        let mut got = start.clone();
        let mut params = vec![Vec::new(); sizes.len()];
        let mut halves = vec![Vec::new(); sizes.len()];
        let mut each = Vec::new();
        for s in &scalars {
            run(
                level,
                s,
                &mut got,
                &grads,
                &mut params,
                &mut halves,
                &grads16,
            )
            .unwrap();
            each.push(got.clone());
        }
        each
    };
    let truth = steps(SimdLevel::Scalar);
    // The reference, a step at a time from the rounded params.
    let mut before = start.clone();
    for (k, (s, after)) in scalars.iter().zip(&truth).enumerate() {
        let nearest = StepScalars {
            rounding_seed: None,
            ..*s
        };
        let mut master: Vec<Owned> = before.clone();
        for t in &mut master {
            t.kind = Param::Bf16Master;
            t.master = t.params_f32();
        }
        let mut params = vec![Vec::new(); sizes.len()];
        let mut halves = vec![Vec::new(); sizes.len()];
        let (level, m) = (SimdLevel::Scalar, &mut master);
        run(
            level,
            &nearest,
            m,
            &grads,
            &mut params,
            &mut halves,
            &grads16,
        )
        .unwrap();
        let mut moved = 0;
        for (i, (m, got)) in master.iter().zip(after).enumerate() {
            assert_eq!(
                (&m.codes, &m.absmax),
                (&got.codes, &got.absmax),
                "step {k} [{i}]"
            );
            let key = StochasticKey {
                seed,
                step: k as u64 + 1,
                tensor: i as u64,
            };
            for (j, (&x, &p)) in m.master.iter().zip(&got.param).enumerate() {
                let want = bf16_bits(x, key.bits(j as u64));
                assert_eq!(p, u32::from(want), "step {k} [{i}] element {j}");
                moved += (want != bf16::from_f32(x).to_bits()) as usize;
            }
        }
        assert!(moved > 1000, "{moved}");
        before = after.clone();
    }
    for level in SimdLevel::supported() {
        for threads in [1, 2, 3] {
            let pool = pool(threads);
            let got = pool.install(|| steps(level));
            assert!(got == truth, "{level} threads={threads}");
        }
    }
}

#[test]
fn a_finite_gradient_whose_square_overflows_gives_v_infinity_and_update_0_as_float32_state() {
    // g = 1e21: (1 - beta2) * g^2 overflows float32, so v = +inf and that
    // element's update is m / inf = 0, as with float32 state; the block keeps
    // its other elements (absmax stored negated: see codec.rs), and the next
    // steps keep v infinite and the param where it was.
    let n = 3 * BLOCK + 7;
    let big = 300;
    let cfg = AdamConfig {
        lr: 1e-2,
        amsgrad: true,
        momentum: 0.5,
        ..Default::default()
    };
    let mut rng = Rng(5);
    let start = Owned::new(&mut rng, n, Param::F32);
    let grads: Vec<Vec<f32>> = (0..3)
        .map(|t| {
            let mut g: Vec<f32> = rng.vec(n, 1.0);
            if t == 0 {
                g[big] = 1e21;
            }
            g
        })
        .collect();
    let scalars: Vec<StepScalars> = (1..=3)
        .map(|t| StepScalars::new(&cfg, t).unwrap())
        .collect();
    let mut want = vec![start.clone()];
    for (s, g) in scalars.iter().zip(&grads) {
        let mut next = want.last().unwrap().clone();
        next.reference_step(s, g);
        want.push(next);
    }
    for after in &want[1..] {
        let v = decoded(after, 1);
        assert_eq!(v[big], f32::INFINITY);
        assert_eq!(decoded(after, 2)[big], f32::INFINITY, "AMSGrad's max");
        assert_eq!(after.param[big], start.param[big], "update 0");
        let params = after.params_f32();
        assert!(params.iter().all(|p| p.is_finite()));
        assert!((v.iter().enumerate()).all(|(i, x)| i == big || x.is_finite()));
        // The block's other elements moved.
        let moved = (256..512).filter(|&i| after.param[i] != start.param[i]);
        assert_eq!(moved.count(), 255);
    }
    // The block of the infinity holds it; the others are as without it.
    assert!(want[1].absmax[1][1].is_sign_negative());
    assert!(want[1].absmax[1][0] > 0.0 && want[1].absmax[1][2] > 0.0);
    // Float32 state: the same element's update is 0 and its v infinite.
    let mut p32 = start.params_f32();
    let mut s32: [Vec<f32>; 4] = std::array::from_fn(|_| vec![0f32; n]);
    for (s, g) in scalars.iter().zip(&grads) {
        let [m, v, x, u] = &mut s32;
        let t = Tensor::new(
            StoredMut::Native(&mut p32[..]),
            Stored::Native(&g[..]),
            State::new(
                StoredMut::Native(&mut m[..]),
                StoredMut::Native(&mut v[..]),
                Some(StoredMut::Native(&mut x[..])),
                Some(StoredMut::Native(&mut u[..])),
            ),
            0,
        );
        step_tensors_with(SimdLevel::Scalar, vec![t], std::slice::from_ref(s)).unwrap();
        assert_eq!(
            (p32[big].to_bits(), s32[1][big]),
            (start.param[big], f32::INFINITY)
        );
    }
    // Every level and thread count gives the reference's bytes.
    for level in SimdLevel::supported() {
        for threads in [1, 2] {
            let mut got = [start.clone()];
            let (mut params, mut halves) = (vec![Vec::new()], vec![Vec::new()]);
            let none = vec![Vec::new()];
            pool(threads).install(|| {
                for (t, (s, g)) in scalars.iter().zip(&grads).enumerate() {
                    let g = std::slice::from_ref(g);
                    run(level, s, &mut got, g, &mut params, &mut halves, &none).unwrap();
                    assert!(got[0] == want[t + 1], "{level} threads={threads} step {t}");
                }
            });
        }
    }
}

/// State buffer `k` of `t`, decoded.
fn decoded(t: &Owned, k: usize) -> Vec<f32> {
    let mut out = vec![0f32; t.codes[k].len()];
    decode(
        SimdLevel::Scalar,
        BOOKS[k],
        &t.codes[k],
        &t.absmax[k],
        &mut out,
    )
    .unwrap();
    out
}
