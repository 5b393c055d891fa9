//! Tests of the kernels against a reference written from the formulas, and of
//! the SIMD levels and thread counts against each other, bit for bit.

use crate::multi::{CHUNK, SERIAL_MAX};
use crate::{
    grad_norm, step_tensors_with, AdamConfig, Algorithm, BiasCorrection, Float, SimdLevel, State,
    StepError, StepScalars, TensorMut,
};

/// A small deterministic generator (xorshift64*), so tests need no crate.
pub(crate) struct Rng(pub u64);
impl Rng {
    pub(crate) fn next_f64(&mut self) -> f64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        let x = self.0.wrapping_mul(0x2545_F491_4F6C_DD1D);
        (x >> 11) as f64 / (1u64 << 53) as f64 * 2.0 - 1.0
    }
    pub(crate) fn vec<T: Float>(&mut self, n: usize, scale: f64) -> Vec<T> {
        (0..n)
            .map(|_| T::from_f64(self.next_f64() * scale))
            .collect()
    }
}

/// The formulas of docs/formulas.md (Algorithm 1 with PyTorch's options, the efficient
/// form, beta1 decay, downhill 0.4.0, downhill's momentum and clipping, AdaMax),
/// written plainly in f64.
struct Reference {
    m: Vec<f64>,
    v: Vec<f64>,
    vmax: Vec<f64>,
    vel: Vec<f64>,
    mu_product: f64,
    t: i32,
}
impl Reference {
    fn new(n: usize) -> Self {
        Reference {
            m: vec![0.0; n],
            v: vec![0.0; n],
            vmax: vec![0.0; n],
            vel: vec![0.0; n],
            mu_product: 1.0,
            t: 0,
        }
    }
    fn step(&mut self, c: &AdamConfig, p: &mut [f64], grad: &[f64]) {
        self.t += 1;
        let t = self.t;
        let beta1_t = c.beta1 * c.beta1_decay.powi(t - 1);
        let bc1 = 1.0 - c.beta1.powi(t);
        let bc2 = 1.0 - c.beta2.powi(t);
        // NAdam (torch.optim.NAdam's documentation).
        let nadam_mu = |t: i32| c.beta1 * (1.0 - 0.5 * 0.96f64.powf(t as f64 * c.momentum_decay));
        let (mu, mu_next) = (nadam_mu(t), nadam_mu(t + 1));
        if c.algorithm == Algorithm::NAdam {
            self.mu_product *= mu;
        }
        // RAdam (torch.optim.RAdam's documentation).
        let rho_inf = 2.0 / (1.0 - c.beta2) - 1.0;
        let rho_t = rho_inf - 2.0 * t as f64 * c.beta2.powi(t) / bc2;
        let grad: Vec<f64> = grad.iter().map(|g| g / c.grad_scale).collect();
        let norm = grad.iter().map(|g| g * g).sum::<f64>().sqrt();
        for i in 0..p.len() {
            let mut g = grad[i];
            if c.max_gradient_elem > 0.0 {
                g = g.clamp(-c.max_gradient_elem, c.max_gradient_elem);
            } else if c.max_gradient_norm > 0.0 {
                g *= (c.max_gradient_norm / norm).min(1.0);
            }
            if c.maximize {
                g = -g;
            }
            if c.decoupled_weight_decay {
                p[i] *= 1.0 - c.lr * c.weight_decay;
            } else {
                g += c.weight_decay * p[i];
            }
            self.m[i] = beta1_t * self.m[i] + (1.0 - beta1_t) * g;
            let delta = if c.algorithm == Algorithm::NAdam {
                self.v[i] = c.beta2 * self.v[i] + (1.0 - c.beta2) * g * g;
                let denom = (self.v[i] / bc2).sqrt() + c.eps;
                c.lr * (1.0 - mu) / (1.0 - self.mu_product) * g / denom
                    + c.lr * mu_next / (1.0 - self.mu_product * mu_next) * self.m[i] / denom
            } else if c.algorithm == Algorithm::RAdam {
                self.v[i] = c.beta2 * self.v[i] + (1.0 - c.beta2) * g * g;
                let m_hat = self.m[i] / bc1;
                if rho_t > 5.0 {
                    let rect = ((rho_t - 4.0) * (rho_t - 2.0) * rho_inf
                        / ((rho_inf - 4.0) * (rho_inf - 2.0) * rho_t))
                        .sqrt();
                    c.lr * m_hat * rect * bc2.sqrt() / (self.v[i].sqrt() + c.eps)
                } else {
                    c.lr * m_hat
                }
            } else if c.algorithm == Algorithm::Adamax {
                self.v[i] = (c.beta2 * self.v[i]).max(g.abs() + c.eps);
                if self.v[i] == 0.0 {
                    0.0
                } else {
                    c.lr / bc1 * self.m[i] / self.v[i]
                }
            } else {
                self.v[i] = c.beta2 * self.v[i] + (1.0 - c.beta2) * g * g;
                self.vmax[i] = self.vmax[i].max(self.v[i]);
                let v = if c.amsgrad { self.vmax[i] } else { self.v[i] };
                match c.bias_correction {
                    BiasCorrection::Downhill040 => {
                        c.lr * (self.m[i] / (1.0 - beta1_t))
                            / ((v / (1.0 - c.beta2)).sqrt() + c.eps)
                    }
                    BiasCorrection::Adam if c.efficient_form => {
                        c.lr * bc2.sqrt() / bc1 * self.m[i] / (v.sqrt() + c.eps)
                    }
                    BiasCorrection::Adam => c.lr * (self.m[i] / bc1) / ((v / bc2).sqrt() + c.eps),
                }
            };
            let mu = c.momentum;
            if c.nesterov {
                self.vel[i] = mu * mu * self.vel[i] - (1.0 + mu) * delta;
                p[i] += self.vel[i];
            } else if mu != 0.0 {
                self.vel[i] = mu * self.vel[i] - delta;
                p[i] += self.vel[i];
            } else {
                p[i] -= delta;
            }
        }
    }
}

/// Each update rule's preset (Adam, AdaMax, NAdam, RAdam) at lr 1e-2: the
/// base the tests' configurations change.
pub(crate) fn rules() -> [AdamConfig; 4] {
    let presets = [
        AdamConfig::default(),
        AdamConfig::adamax(),
        AdamConfig::nadam(),
        AdamConfig::radam(),
    ];
    presets.map(|preset| AdamConfig { lr: 1e-2, ..preset })
}

fn all_configs() -> Vec<AdamConfig> {
    let [base, adamax, nadam, radam] = rules();
    let mut out = Vec::new();
    for wd in [0.0, 0.1] {
        for decoupled in [false, true] {
            for amsgrad in [false, true] {
                for maximize in [false, true] {
                    out.push(AdamConfig {
                        weight_decay: wd,
                        decoupled_weight_decay: decoupled,
                        amsgrad,
                        maximize,
                        ..base
                    });
                }
            }
        }
    }
    out.extend([
        AdamConfig {
            efficient_form: true,
            ..base
        },
        AdamConfig {
            beta1_decay: 0.99,
            ..base
        },
        AdamConfig {
            bias_correction: BiasCorrection::Downhill040,
            beta1_decay: 1.0 - 1e-3,
            ..base
        },
        AdamConfig {
            momentum: 0.9,
            ..base
        },
        AdamConfig {
            momentum: 0.9,
            nesterov: true,
            weight_decay: 0.1,
            ..base
        },
        AdamConfig {
            max_gradient_elem: 0.3,
            ..base
        },
        AdamConfig {
            max_gradient_norm: 1.5,
            amsgrad: true,
            ..base
        },
        AdamConfig {
            max_gradient_elem: 0.3,
            max_gradient_norm: 1.5,
            ..base
        },
        AdamConfig {
            eps: 0.0, // the paper's form
            ..adamax
        },
        AdamConfig {
            eps: 1e-8,
            momentum: 0.5,
            weight_decay: 0.1,
            maximize: true,
            ..adamax
        },
        nadam,
        AdamConfig {
            weight_decay: 0.1,
            decoupled_weight_decay: true,
            momentum: 0.5,
            ..nadam
        },
        radam,
        AdamConfig {
            beta2: 0.9,
            weight_decay: 0.1,
            ..radam
        },
        AdamConfig {
            grad_scale: 1024.0,
            max_gradient_elem: 0.3,
            ..base
        },
        AdamConfig {
            grad_scale: 0.5,
            max_gradient_norm: 1.5,
            ..base
        },
    ]);
    out
}

/// Buffers of one tensor, owned, for tests.
#[derive(Clone, PartialEq, Debug)]
pub(crate) struct Owned<T> {
    pub p: Vec<T>,
    pub m: Vec<T>,
    pub v: Vec<T>,
    pub x: Vec<T>,
    pub u: Vec<T>,
}
impl<T: Float> Owned<T> {
    fn new(rng: &mut Rng, n: usize) -> Self {
        Owned {
            p: rng.vec(n, 1.0),
            m: vec![T::ZERO; n],
            v: vec![T::ZERO; n],
            x: vec![T::ZERO; n],
            u: vec![T::ZERO; n],
        }
    }
    fn bits(&self) -> Vec<u64> {
        [&self.p, &self.m, &self.v, &self.x, &self.u]
            .iter()
            .flat_map(|b| b.iter().map(|x| x.to_f64().to_bits()))
            .collect()
    }
}

pub(crate) fn run<T: Float>(
    level: SimdLevel,
    cfg: &AdamConfig,
    t: u64,
    tensors: &mut [Owned<T>],
    grads: &[Vec<T>],
) -> Result<(), StepError> {
    let scalars = [StepScalars::new(cfg, t)?];
    let views = tensors
        .iter_mut()
        .zip(grads)
        .map(|(o, g)| {
            TensorMut::new(
                &mut o.p,
                g,
                State::new(&mut o.m, &mut o.v, Some(&mut o.x), Some(&mut o.u)),
                0,
            )
        })
        .collect();
    step_tensors_with(level, views, &scalars)
}

#[test]
fn matches_reference_in_f64_for_every_option() {
    // Gradients of unit scale; the clipping limits above are set to bite.
    for cfg in all_configs() {
        let mut rng = Rng(42);
        let n = 37;
        let mut ours = vec![Owned::<f64>::new(&mut rng, n)];
        let mut p_ref = ours[0].p.clone();
        let mut reference = Reference::new(n);
        for t in 1..=200 {
            let g: Vec<f64> = rng.vec(n, 1.0);
            reference.step(&cfg, &mut p_ref, &g);
            run(SimdLevel::detect(), &cfg, t, &mut ours, &[g]).unwrap();
        }
        // 1e-12 relative, with a floor of 1e-12 times the largest param: an
        // entry that crossed zero is judged on the scale of the tensor.
        let scale = p_ref.iter().fold(0.0f64, |acc, x| acc.max(x.abs()));
        for (a, b) in ours[0].p.iter().zip(&p_ref) {
            assert!(
                (a - b).abs() <= 1e-12 * b.abs().max(scale),
                "{cfg:?}: {a} vs {b}"
            );
        }
    }
}

#[test]
fn f32_stays_close_to_the_f64_reference() {
    let cfg = AdamConfig {
        lr: 1e-2,
        ..Default::default()
    };
    let mut rng = Rng(7);
    let n = 100;
    let mut ours = vec![Owned::<f32>::new(&mut rng, n)];
    let mut p_ref: Vec<f64> = ours[0].p.iter().map(|&x| x as f64).collect();
    let mut reference = Reference::new(n);
    for t in 1..=200 {
        let g: Vec<f32> = rng.vec(n, 1.0);
        let g64: Vec<f64> = g.iter().map(|&x| x as f64).collect();
        reference.step(&cfg, &mut p_ref, &g64);
        run(SimdLevel::detect(), &cfg, t, &mut ours, &[g]).unwrap();
    }
    for (a, b) in ours[0].p.iter().zip(&p_ref) {
        assert!(
            (*a as f64 - b).abs() <= 1e-5 * b.abs().max(1.0),
            "{a} vs {b}"
        );
    }
}

fn levels_agree_bit_for_bit<T: Float>() {
    let sizes = [
        0,
        1,
        2,
        3,
        7,
        8,
        9,
        15,
        16,
        17,
        31,
        32,
        33,
        63,
        64,
        65,
        255,
        256,
        257,
        1000,
        CHUNK - 1,
        CHUNK + 1,
    ];
    for cfg in all_configs() {
        let mut rng = Rng(1);
        let base: Vec<Owned<T>> = sizes.iter().map(|&n| Owned::new(&mut rng, n)).collect();
        let mut results = Vec::new();
        for level in SimdLevel::supported() {
            let mut rng = Rng(2);
            let mut tensors = base.clone();
            for t in 1..=5 {
                let grads: Vec<Vec<T>> = sizes.iter().map(|&n| rng.vec(n, 3.0)).collect();
                run(level, &cfg, t, &mut tensors, &grads).unwrap();
            }
            let bits: Vec<u64> = tensors.iter().flat_map(|o| o.bits()).collect();
            results.push((level, bits));
        }
        let (scalar, want) = &results[0];
        assert_eq!(*scalar, SimdLevel::Scalar);
        for (level, got) in &results[1..] {
            assert!(got == want, "{level} differs from scalar for {cfg:?}");
        }
    }
}

#[test]
fn simd_levels_agree_bit_for_bit_f32() {
    levels_agree_bit_for_bit::<f32>();
}

#[test]
fn simd_levels_agree_bit_for_bit_f64() {
    levels_agree_bit_for_bit::<f64>();
}

#[test]
fn thread_count_does_not_change_a_bit() {
    // Uneven sizes, many tensors, well above the serial threshold.
    same_bits_on_any_thread_count(&[1, 100_003, 5, CHUNK * 3 + 17, 4096, 77_777, 3, 250_000]);
    // Small steps just above it, cut into units shorter than CHUNK.
    same_bits_on_any_thread_count(&[70_001]);
    same_bits_on_any_thread_count(&[3, SERIAL_MAX - 2, 1000]);
}

fn same_bits_on_any_thread_count(sizes: &[usize]) {
    let cfg = AdamConfig {
        amsgrad: true,
        weight_decay: 0.01,
        ..Default::default()
    };
    let mut rng = Rng(3);
    let base: Vec<Owned<f32>> = sizes.iter().map(|&n| Owned::new(&mut rng, n)).collect();
    let grads: Vec<Vec<f32>> = sizes.iter().map(|&n| rng.vec(n, 1.0)).collect();
    let mut results = Vec::new();
    for threads in [1, 2, 3, 4, 7] {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()
            .unwrap();
        let mut tensors = base.clone();
        pool.install(|| {
            for t in 1..=3 {
                run(SimdLevel::detect(), &cfg, t, &mut tensors, &grads).unwrap();
            }
        });
        results.push(tensors);
    }
    // The serial scalar path is the ground truth.
    let mut tensors = base.clone();
    for t in 1..=3 {
        run(SimdLevel::Scalar, &cfg, t, &mut tensors, &grads).unwrap();
    }
    for (i, r) in results.iter().enumerate() {
        assert!(r == &tensors, "result with pool #{i} differs");
    }
}

#[test]
fn mismatched_buffers_are_errors_and_write_nothing() {
    let cfg = AdamConfig {
        amsgrad: true,
        ..Default::default()
    };
    let scalars = [StepScalars::new(&cfg, 1).unwrap()];
    let mut p = vec![1.0f32; 4];
    let mut m = [0.0f32; 4];
    let mut v = vec![0.0f32; 3];
    let mut x = vec![0.0f32; 4];
    let g = [1.0f32; 4];
    // One tensor with the given second moment, AMSGrad max and group.
    let mut step = |v: &mut [f32], x: Option<&mut [f32]>, group: usize| {
        let state = State::new(&mut m[..], v, x, None);
        let tensor = TensorMut::new(&mut p[..], &g[..], state, group);
        step_tensors_with(SimdLevel::Scalar, vec![tensor], &scalars).unwrap_err()
    };
    assert_eq!(
        step(&mut v, Some(&mut x), 0),
        StepError::LengthMismatch {
            index: 0,
            buffer: "exp_avg_sq",
            expected: 4,
            got: 3
        }
    );
    let mut v = vec![0.0f32; 4];
    assert_eq!(
        step(&mut v, None, 0),
        StepError::MissingBuffer {
            index: 0,
            buffer: "max_exp_avg_sq"
        }
    );
    assert_eq!(
        step(&mut v, Some(&mut x), 1),
        StepError::GroupOutOfRange {
            index: 0,
            group: 1,
            groups: 1
        }
    );
    assert_eq!(p, vec![1.0; 4]);
    assert!(m.iter().chain(&v).chain(&x).all(|&z| z == 0.0));
}

#[test]
fn groups_use_their_own_scalars() {
    let fast = AdamConfig {
        lr: 0.1,
        ..Default::default()
    };
    let slow = AdamConfig {
        lr: 0.001,
        ..Default::default()
    };
    let scalars = [
        StepScalars::new(&fast, 1).unwrap(),
        StepScalars::new(&slow, 1).unwrap(),
    ];
    let (mut p0, mut p1) = (vec![1.0f64], vec![1.0f64]);
    let (mut m0, mut m1, mut v0, mut v1) = (vec![0.0], vec![0.0], vec![0.0], vec![0.0]);
    let g = vec![0.5f64];
    step_tensors_with(
        SimdLevel::detect(),
        vec![
            TensorMut::new(&mut p0, &g, State::new(&mut m0, &mut v0, None, None), 0),
            TensorMut::new(&mut p1, &g, State::new(&mut m1, &mut v1, None, None), 1),
        ],
        &scalars,
    )
    .unwrap();
    // The first Adam step moves each param by lr * g / (|g| + eps) ~ lr.
    assert!((1.0 - p0[0] - 0.1).abs() < 1e-6);
    assert!((1.0 - p1[0] - 0.001).abs() < 1e-6);
}

#[test]
fn owning_optimizer_converges_on_rosenbrock() {
    let cfg = AdamConfig {
        lr: 2e-2,
        ..Default::default()
    };
    let mut xy = vec![-1.5f64, 2.0];
    let mut opt = crate::Adam::<f64>::new(cfg, &[2]).unwrap();
    for _ in 0..20_000 {
        let (x, y) = (xy[0], xy[1]);
        let g = [
            -2.0 * (1.0 - x) - 400.0 * x * (y - x * x),
            200.0 * (y - x * x),
        ];
        opt.step(&mut [&mut xy[..]], &[&g[..]]).unwrap();
    }
    assert!(
        (xy[0] - 1.0).abs() < 1e-3 && (xy[1] - 1.0).abs() < 1e-3,
        "{xy:?}"
    );
    assert_eq!(opt.step_count(), 20_000);
    let err = opt.step(&mut [&mut xy[..]], &[]).unwrap_err();
    assert_eq!(
        err,
        StepError::CountMismatch {
            what: "grads",
            expected: 1,
            got: 0
        }
    );
}

#[test]
fn grad_norm_does_not_depend_on_the_thread_count() {
    let mut rng = Rng(9);
    let g: Vec<f32> = rng.vec(CHUNK * 5 + 3, 1.0);
    let want = g
        .iter()
        .map(|&x| (x as f64) * (x as f64))
        .sum::<f64>()
        .sqrt();
    let mut bits = Vec::new();
    for threads in [1, 2, 3] {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()
            .unwrap();
        bits.push(pool.install(|| grad_norm(&g)).to_bits());
    }
    assert!(bits.iter().all(|&b| b == bits[0]));
    assert!((f64::from_bits(bits[0]) - want).abs() <= 1e-12 * want);
}

#[test]
fn radam_switches_to_the_adaptive_step_when_rho_exceeds_5() {
    // With beta2 = 0.999, rho_t first exceeds 5 at t = 6 (rho_inf = 1999).
    let cfg = AdamConfig::radam();
    let adaptive = |t| StepScalars::new(&cfg, t).unwrap().rule == crate::scalars::Rule::Adam;
    assert!((1..=5).all(|t| !adaptive(t)));
    assert!((6..=200).all(adaptive));
}

#[test]
fn nadam_carry_matches_the_recomputed_product() {
    let cfg = AdamConfig::nadam();
    let mut carry = crate::scalars::Carry::default();
    for t in 1..=50u64 {
        let (s, next) = StepScalars::next(&cfg, t, carry).unwrap();
        assert_eq!(s, StepScalars::new(&cfg, t).unwrap());
        carry = next;
    }
}

#[test]
fn any_start_within_a_cache_line_gives_the_reference_result() {
    // The step runs a head up to the param's first cache-line boundary
    // separately; params and state that start at different offsets in their
    // lines, of lengths around the vector width, must all come out right, and
    // nothing outside the slices may be written.
    let cfg = AdamConfig {
        lr: 1e-2,
        amsgrad: true,
        ..Default::default()
    };
    const GUARD: f64 = 12345.0;
    for n in [1, 7, 8, 9, 23, 100] {
        for offset in 0..8 {
            let state_offset = (offset * 3 + 1) % 8;
            let mut rng = Rng(11 + offset as u64);
            let mut p = vec![GUARD; n + 16];
            let init: Vec<f64> = rng.vec(n, 1.0);
            p[offset..offset + n].copy_from_slice(&init);
            let mut state = vec![vec![GUARD; n + 16]; 4];
            for s in state.iter_mut() {
                s[state_offset..state_offset + n].fill(0.0);
            }
            let mut p_ref = init.clone();
            let mut reference = Reference::new(n);
            for t in 1..=20 {
                let g: Vec<f64> = rng.vec(n, 1.0);
                reference.step(&cfg, &mut p_ref, &g);
                let [m, v, x, u] = &mut state[..] else {
                    unreachable!()
                };
                let r = state_offset..state_offset + n;
                let views = vec![TensorMut::new(
                    &mut p[offset..offset + n],
                    &g,
                    State::new(
                        &mut m[r.clone()],
                        &mut v[r.clone()],
                        Some(&mut x[r.clone()]),
                        Some(&mut u[r]),
                    ),
                    0,
                )];
                let scalars = [StepScalars::new(&cfg, t).unwrap()];
                step_tensors_with(SimdLevel::detect(), views, &scalars).unwrap();
            }
            for (a, b) in p[offset..offset + n].iter().zip(&p_ref) {
                assert!(
                    (a - b).abs() <= 1e-12 * b.abs().max(1.0),
                    "n {n} offset {offset}"
                );
            }
            let outside =
                |b: &[f64], o: usize| b[..o].iter().chain(&b[o + n..]).all(|&x| x == GUARD);
            assert!(outside(&p, offset), "param written outside its slice");
            assert!(state.iter().all(|s| outside(s, state_offset)));
        }
    }
}
