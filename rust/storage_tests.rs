//! Tests of 16-bit storage: bfloat16/float16 state and params, staged and
//! fused, against an f32 step rounded by hand, across SIMD levels and threads.

use half::{bf16, f16};

use crate::kernel_tests::{run, Owned, Rng};
use crate::{
    step_tensors_with, AdamConfig, MixedTensorMut, SimdLevel, State, StepScalars, Stored,
    StoredMut, CHUNK,
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
    };
    step_tensors_with(level, vec![tensor], &scalars).unwrap();
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
