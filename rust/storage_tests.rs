//! Tests of 16-bit storage: bfloat16/float16 state and params, staged and
//! fused, against an f32 step rounded by hand, across SIMD levels and threads;
//! 16-bit params rounded stochastically, against the rule and the hash.

use half::{bf16, f16};

use crate::kernel_tests::{run, Owned, Rng};
use crate::multi::CHUNK;
use crate::quant::stochastic::{bf16_bits, f16_bits};
use crate::quant::StochasticKey;
use crate::{
    step_tensors_with, AdamConfig, MixedTensorMut, Origin, SimdLevel, State, StepError,
    StepScalars, Stored, StoredMut,
};

/// One tensor stored in 16 bits: bfloat16 moments, float16 param with an f32 master.
struct Half {
    param: Vec<f16>,
    master: Vec<f32>,
    m: Vec<bf16>,
    v: Vec<bf16>,
    x: Vec<bf16>,
}

fn run_half(level: SimdLevel, cfg: &AdamConfig, t: u64, h: &mut Half, g: &[f16]) {
    let scalars = [StepScalars::new(cfg, t).unwrap()];
    let tensor = MixedTensorMut {
        param: StoredMut::F16(&mut h.param),
        grad: Stored::F16(g),
        master_param: Some(StoredMut::Native(&mut h.master)),
        state: State {
            exp_avg: StoredMut::Bf16(&mut h.m),
            exp_avg_sq: StoredMut::Bf16(&mut h.v),
            max_exp_avg_sq: Some(StoredMut::Bf16(&mut h.x)),
            velocity: None,
        },
        group: 0,
        origin: None,
    };
    step_tensors_with(level, vec![tensor], &scalars).unwrap();
}

/// Adam's two moments, stored natively (no AMSGrad, no momentum).
fn adam_state<'a, T>(m: &'a mut [T], v: &'a mut [T]) -> State<StoredMut<'a, T>> {
    State::new(StoredMut::Native(m), StoredMut::Native(v), None, None)
}

#[test]
fn sixteen_bit_storage_rounds_an_f32_step() {
    // Emulate by hand: widen, take the f32 step, round the moments to
    // bfloat16 and the master to float16 (round to nearest even) each step.
    let cfg = AdamConfig {
        lr: 1e-2,
        amsgrad: true,
        ..Default::default()
    };
    let n = 1000;
    let mut rng = Rng(11);
    let init: Vec<f32> = rng.vec(n, 1.0);
    let mut h = Half {
        param: init.iter().map(|&x| f16::from_f32(x)).collect(),
        master: init.clone(),
        m: vec![bf16::ZERO; n],
        v: vec![bf16::ZERO; n],
        x: vec![bf16::ZERO; n],
    };
    let mut emul = vec![Owned::<f32> {
        p: init,
        m: vec![0.0; n],
        v: vec![0.0; n],
        x: vec![0.0; n],
        u: vec![0.0; n],
    }];
    for t in 1..=20 {
        let g: Vec<f16> = rng
            .vec::<f32>(n, 1.0)
            .iter()
            .map(|&x| f16::from_f32(x))
            .collect();
        run_half(SimdLevel::detect(), &cfg, t, &mut h, &g);
        let g32: Vec<f32> = g.iter().map(|x| x.to_f32()).collect();
        run(SimdLevel::Scalar, &cfg, t, &mut emul, &[g32]).unwrap();
        let o = &mut emul[0];
        for buf in [&mut o.m, &mut o.v, &mut o.x] {
            buf.iter_mut()
                .for_each(|x| *x = bf16::from_f32(*x).to_f32());
        }
    }
    let o = &emul[0];
    assert_eq!(h.master, o.p);
    assert!(h
        .param
        .iter()
        .zip(&o.p)
        .all(|(a, b)| *a == f16::from_f32(*b)));
    assert!(h.m.iter().zip(&o.m).all(|(a, b)| a.to_f32() == *b));
    assert!(h.v.iter().zip(&o.v).all(|(a, b)| a.to_f32() == *b));
}

#[test]
fn sixteen_bit_storage_is_the_same_at_every_level_and_thread_count() {
    let cfg = AdamConfig {
        lr: 1e-2,
        amsgrad: true,
        max_gradient_norm: 5.0,
        ..Default::default()
    };
    let n = CHUNK * 3 + 77;
    let mut rng = Rng(12);
    let init: Vec<f32> = rng.vec(n, 1.0);
    let grads: Vec<Vec<f16>> = (0..3)
        .map(|_| {
            rng.vec::<f32>(n, 1.0)
                .iter()
                .map(|&x| f16::from_f32(x))
                .collect()
        })
        .collect();
    let fresh = || Half {
        param: init.iter().map(|&x| f16::from_f32(x)).collect(),
        master: init.clone(),
        m: vec![bf16::ZERO; n],
        v: vec![bf16::ZERO; n],
        x: vec![bf16::ZERO; n],
    };
    let mut results = Vec::new();
    for level in SimdLevel::supported() {
        for threads in [1, 2, 3] {
            let pool = rayon::ThreadPoolBuilder::new()
                .num_threads(threads)
                .build()
                .unwrap();
            let mut h = fresh();
            pool.install(|| {
                for (t, g) in (1..).zip(&grads) {
                    run_half(level, &cfg, t, &mut h, g);
                }
            });
            let bits: Vec<u32> = h
                .master
                .iter()
                .map(|x| x.to_bits())
                .chain(
                    h.m.iter()
                        .chain(&h.v)
                        .chain(&h.x)
                        .map(|x| x.to_bits() as u32),
                )
                .chain(h.param.iter().map(|x| x.to_bits() as u32))
                .collect();
            results.push(bits);
        }
    }
    assert!(results.iter().all(|r| r == &results[0]));
}

/// 16-bit state converted in the kernel's loop gives the bits of 16-bit state
/// staged through f32 blocks (forced here by a master copy), at every level.
fn fused_state_matches_staged<S: Copy + PartialEq + std::fmt::Debug>(
    zero: S,
    wrap: fn(&mut [S]) -> StoredMut<'_, f32>,
) {
    let cfg = AdamConfig {
        lr: 1e-2,
        amsgrad: true,
        momentum: 0.5,
        ..Default::default()
    };
    let n = 3 * CHUNK + 101;
    let mut rng = Rng(21);
    let init: Vec<f32> = rng.vec(n, 1.0);
    let grads: Vec<Vec<f32>> = (0..4).map(|_| rng.vec(n, 1.0)).collect();
    let mut results = Vec::new();
    for level in SimdLevel::supported() {
        for staged in [false, true] {
            let mut p = init.clone();
            let mut master = init.clone();
            let mut state = vec![vec![zero; n]; 4];
            for (t, g) in (1..).zip(&grads) {
                let scalars = [StepScalars::new(&cfg, t).unwrap()];
                let [m, v, x, u] = &mut state[..] else {
                    unreachable!()
                };
                let tensor = MixedTensorMut {
                    param: StoredMut::Native(&mut p),
                    grad: Stored::Native(g),
                    master_param: staged.then_some(StoredMut::Native(&mut master[..])),
                    state: State {
                        exp_avg: wrap(m),
                        exp_avg_sq: wrap(v),
                        max_exp_avg_sq: Some(wrap(x)),
                        velocity: Some(wrap(u)),
                    },
                    group: 0,
                    origin: None,
                };
                step_tensors_with(level, vec![tensor], &scalars).unwrap();
            }
            results.push((level, staged, p, state));
        }
    }
    let (_, _, p0, s0) = &results[0];
    for (level, staged, p, s) in &results[1..] {
        assert!(p == p0 && s == s0, "{level} staged={staged}");
    }
}

#[test]
fn fused_bf16_state_matches_staged() {
    fused_state_matches_staged(bf16::ZERO, |s| StoredMut::Bf16(s));
}

#[test]
fn fused_f16_state_matches_staged() {
    fused_state_matches_staged(f16::ZERO, |s| StoredMut::F16(s));
}

/// Several bfloat16 and float16 params stepped with stochastic rounding: the
/// params, their origins, and f32 moments.
#[derive(Clone, PartialEq, Debug)]
struct Rounded {
    bf: Vec<Vec<bf16>>,
    h: Vec<Vec<f16>>,
    m: Vec<Vec<f32>>,
    v: Vec<Vec<f32>>,
}

/// The tensors of `r` (bfloat16 ones first) at `origins` (None: their
/// positions), stepped once; `masters` instead steps f32 master copies of
/// the params, rounded to nearest.
fn step_rounded(
    level: SimdLevel,
    scalars: &[StepScalars],
    r: &mut Rounded,
    grads: &[Vec<f32>],
    origins: &[Option<Origin>],
    masters: Option<&mut Vec<Vec<f32>>>,
) -> Result<(), StepError> {
    let params = r.bf.iter_mut().map(|p| StoredMut::Bf16(&mut p[..]));
    let params = params.chain(r.h.iter_mut().map(|p| StoredMut::F16(&mut p[..])));
    let mut masters: Vec<Option<&mut Vec<f32>>> = match masters {
        Some(m) => m.iter_mut().map(Some).collect(),
        None => grads.iter().map(|_| None).collect(),
    };
    let tensors = params
        .zip(r.m.iter_mut().zip(r.v.iter_mut()))
        .zip(grads.iter().zip(origins))
        .zip(masters.iter_mut())
        .map(|(((param, (m, v)), (g, origin)), master)| MixedTensorMut {
            param,
            grad: Stored::Native(&g[..]),
            master_param: master.take().map(|w| StoredMut::Native(&mut w[..])),
            state: adam_state(m, v),
            group: 0,
            origin: *origin,
        })
        .collect::<Vec<_>>();
    step_tensors_with(level, tensors, scalars)
}

fn rounded_problem(sizes: &[usize], rng: &mut Rng) -> (Rounded, Vec<Vec<f32>>) {
    let half = sizes.len() / 2;
    let values = |n: usize, rng: &mut Rng| -> Vec<f32> { rng.vec(n, 1.0) };
    let r = Rounded {
        bf: sizes[..half]
            .iter()
            .map(|&n| values(n, rng).iter().map(|&x| bf16::from_f32(x)).collect())
            .collect(),
        h: sizes[half..]
            .iter()
            .map(|&n| values(n, rng).iter().map(|&x| f16::from_f32(x)).collect())
            .collect(),
        m: sizes
            .iter()
            .map(|&n| values(n, rng).iter().map(|x| x * 1e-2).collect())
            .collect(),
        v: sizes
            .iter()
            .map(|&n| values(n, rng).iter().map(|x| x * x * 1e-3).collect())
            .collect(),
    };
    let grads = sizes.iter().map(|&n| values(n, rng)).collect();
    (r, grads)
}

fn rounding_config(seed: u64) -> AdamConfig {
    AdamConfig {
        lr: 3e-3,
        stochastic_rounding: true,
        rounding_seed: seed,
        ..Default::default()
    }
}

#[test]
fn stochastic_rounding_rounds_the_f32_step_with_the_hash_of_each_element() {
    // The reference: the same step on f32 master copies (whose values are the
    // f32 results before any rounding), each rounded by the rule with the bits
    // of (seed, step, origin's tensor, origin's element + i).
    let sizes = [1000, 3, 5000, 17];
    let mut rng = Rng(11);
    let (start, grads) = rounded_problem(&sizes, &mut rng);
    let origins = [
        None,
        Some(Origin {
            tensor: 9,
            element: 1 << 32,
        }),
        Some(Origin {
            tensor: 2,
            element: 123,
        }),
        None,
    ];
    let (seed, step) = (0xdead_beef_0123, 5);
    let scalars = [StepScalars::new(&rounding_config(seed), step).unwrap()];
    let nearest = [StepScalars::new(&rounding_config(seed), step).unwrap()].map(|s| StepScalars {
        rounding_seed: None,
        ..s
    });
    let mut masters: Vec<Vec<f32>> = start
        .bf
        .iter()
        .map(|p| p.iter().map(|x| x.to_f32()).collect())
        .collect();
    masters.extend(
        start
            .h
            .iter()
            .map(|p| p.iter().map(|x| x.to_f32()).collect::<Vec<_>>()),
    );
    let mut reference = start.clone();
    step_rounded(
        SimdLevel::Scalar,
        &nearest,
        &mut reference,
        &grads,
        &origins,
        Some(&mut masters),
    )
    .unwrap();
    for level in SimdLevel::supported() {
        let mut got = start.clone();
        step_rounded(level, &scalars, &mut got, &grads, &origins, None).unwrap();
        assert_eq!((&got.m, &got.v), (&reference.m, &reference.v), "{level}");
        let mut moved = 0;
        for (i, master) in masters.iter().enumerate() {
            let origin = origins[i].unwrap_or(Origin {
                tensor: i as u64,
                element: 0,
            });
            let key = StochasticKey {
                seed,
                step,
                tensor: origin.tensor,
            };
            for (j, &x) in master.iter().enumerate() {
                let r = key.bits(origin.element + j as u64);
                let (want, have, nearest) = if i < 2 {
                    (
                        bf16_bits(x, r),
                        got.bf[i][j].to_bits(),
                        bf16::from_f32(x).to_bits(),
                    )
                } else {
                    (
                        f16_bits(x, r),
                        got.h[i - 2][j].to_bits(),
                        f16::from_f32(x).to_bits(),
                    )
                };
                assert_eq!(have, want, "{level} tensor {i} element {j}");
                moved += (have != nearest) as usize;
            }
        }
        // Rounding away from the nearest value happens, on a fair share of elements.
        assert!(moved > 500, "{moved}");
    }
}

#[test]
fn stochastic_rounding_is_the_same_at_every_level_and_thread_count() {
    // Above the serial threshold, so that pieces are cut and spread over threads.
    let sizes = [CHUNK * 3 + 17, 100_003, 5, 70_001];
    let mut rng = Rng(12);
    let (start, grads) = rounded_problem(&sizes, &mut rng);
    let origins = [None; 4];
    let run3 = |level: SimdLevel| {
        let mut r = start.clone();
        for t in 1..=3 {
            let scalars = [StepScalars::new(&rounding_config(7), t).unwrap()];
            step_rounded(level, &scalars, &mut r, &grads, &origins, None).unwrap();
        }
        r
    };
    let truth = run3(SimdLevel::Scalar);
    assert_ne!(truth, start);
    for threads in [1, 2, 3, 7] {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()
            .unwrap();
        for level in SimdLevel::supported() {
            assert!(
                pool.install(|| run3(level)) == truth,
                "{threads} threads, {level}"
            );
        }
    }
    // Another seed rounds otherwise.
    let rounded_with = |seed| {
        let mut r = start.clone();
        let scalars = [StepScalars::new(&rounding_config(seed), 1).unwrap()];
        step_rounded(SimdLevel::Scalar, &scalars, &mut r, &grads, &origins, None).unwrap();
        r
    };
    assert_ne!(rounded_with(8).bf, rounded_with(7).bf);
}

#[test]
fn stochastic_rounding_of_a_tensor_it_cannot_round_is_an_error_that_writes_nothing() {
    let mut rng = Rng(13);
    let (start, grads) = rounded_problem(&[64, 64], &mut rng);
    let scalars = [StepScalars::new(&rounding_config(1), 1).unwrap()];
    // A master copy.
    let mut r = start.clone();
    let mut masters = vec![vec![0.0f32; 64]; 2];
    let err = step_rounded(
        SimdLevel::Scalar,
        &scalars,
        &mut r,
        &grads,
        &[None; 2],
        Some(&mut masters),
    );
    assert_eq!(err, Err(StepError::RoundingNot16Bit { index: 0 }));
    assert!(r == start && masters.iter().flatten().all(|&x| x == 0.0));
    // A float32 param, after a 16-bit one that could be rounded.
    let (mut p, mut m, mut v) = (vec![1.0f32; 4], vec![0.0f32; 4], vec![0.0f32; 4]);
    let mut bf = [bf16::ONE; 4];
    let (mut m2, mut v2) = (vec![0.0f32; 4], vec![0.0f32; 4]);
    let g = [0.5f32; 4];
    let tensors = [
        (StoredMut::Bf16(&mut bf[..]), &mut m2, &mut v2),
        (StoredMut::Native(&mut p[..]), &mut m, &mut v),
    ]
    .map(|(param, m, v)| MixedTensorMut::new(param, Stored::Native(&g), adam_state(m, v), 0));
    let err = step_tensors_with(SimdLevel::Scalar, tensors.into(), &scalars);
    assert_eq!(err, Err(StepError::RoundingNot16Bit { index: 1 }));
    assert!(bf.iter().all(|&x| x == bf16::ONE) && p.iter().all(|&x| x == 1.0));
    assert!(m2.iter().chain(&m).all(|&x| x == 0.0));
}
