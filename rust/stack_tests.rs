//! Stack discipline: every step path, at every SIMD level this CPU has, runs
//! on threads with a 256 KiB stack (the caller's and a pool's), in the
//! build being tested (a debug build gives each local of each inlined body
//! its own slot, so its frames are the largest). A path whose frame grows
//! past that aborts the test binary with a stack overflow.
//!
//! The levels that ran are written to the test output (an AVX-512 path can
//! only run on a machine that has it).

use std::io::Write;

use half::{bf16, f16};

use crate::kernel_tests::Rng;
use crate::multi::CHUNK;
use crate::quant::block_tests::every_variant;
use crate::quant::{decode, encode, round_stochastic, step_q8, Q8Piece, Q8State};
use crate::quant::{StochasticKey, BLOCK, SIGNED, UNSIGNED};
use crate::{
    step_tensors_with, AdamConfig, MixedTensorMut, SimdLevel, State, StepError, StepScalars,
    Stored, StoredMut,
};

const STACK: usize = 256 * 1024;

/// Owned buffers for one tensor of `n` elements, state of every kind.
struct Buffers {
    p32: Vec<f32>,
    g32: Vec<f32>,
    p64: Vec<f64>,
    g64: Vec<f64>,
    p16: Vec<bf16>,
    g16: Vec<bf16>,
    h16: Vec<f16>,
    gh16: Vec<f16>,
    master: Vec<f32>,
    s32: [Vec<f32>; 4],
    s64: [Vec<f64>; 4],
    b16: [Vec<bf16>; 4],
    f16s: [Vec<f16>; 4],
    codes: [Vec<u8>; 4],
    absmax: [Vec<f32>; 4],
}

impl Buffers {
    fn new(n: usize) -> Self {
        let mut rng = Rng(n as u64);
        let p: Vec<f32> = rng.vec(n, 1.0);
        let g: Vec<f32> = rng.vec(n, 1.0);
        Buffers {
            p64: p.iter().map(|&x| x as f64).collect(),
            g64: g.iter().map(|&x| x as f64).collect(),
            p16: p.iter().map(|&x| bf16::from_f32(x)).collect(),
            g16: g.iter().map(|&x| bf16::from_f32(x)).collect(),
            h16: p.iter().map(|&x| f16::from_f32(x)).collect(),
            gh16: g.iter().map(|&x| f16::from_f32(x)).collect(),
            master: p.clone(),
            s32: std::array::from_fn(|_| vec![0.0; n]),
            s64: std::array::from_fn(|_| vec![0.0; n]),
            b16: std::array::from_fn(|_| vec![bf16::ZERO; n]),
            f16s: std::array::from_fn(|_| vec![f16::ZERO; n]),
            codes: std::array::from_fn(|_| vec![0; n]),
            absmax: std::array::from_fn(|_| vec![0.0; n.div_ceil(BLOCK)]),
            p32: p,
            g32: g,
        }
    }
}

/// A state of its four buffers, all present.
fn four<W>([m, v, x, u]: [W; 4]) -> State<W> {
    State::new(m, v, Some(x), Some(u))
}

fn native<T>(s: &mut [Vec<T>; 4]) -> State<StoredMut<'_, T>> {
    four(s.each_mut().map(|b| StoredMut::Native(&mut b[..])))
}

fn halves<'a, T>(s: &'a mut [Vec<bf16>; 4]) -> State<StoredMut<'a, T>> {
    four(s.each_mut().map(|b| StoredMut::Bf16(&mut b[..])))
}

fn q8<'a, T>(
    codes: &'a mut [Vec<u8>; 4],
    absmax: &'a mut [Vec<f32>; 4],
) -> State<StoredMut<'a, T>> {
    let mut absmax = absmax.iter_mut();
    four(codes.each_mut().map(|c| StoredMut::Q8 {
        codes: &mut c[..],
        absmax: &mut absmax.next().unwrap()[..],
    }))
}

/// `step` on a param of `T` with native state, then with bfloat16 state.
fn native_then_halves<T>(
    step: impl Fn(MixedTensorMut<'_, T>),
    (p, g): (&mut [T], &[T]),
    s: &mut [Vec<T>; 4],
    b16: &mut [Vec<bf16>; 4],
) {
    for state in [native(s), halves(b16)] {
        step(MixedTensorMut::new(
            StoredMut::Native(&mut p[..]),
            Stored::Native(g),
            state,
            0,
        ));
    }
}

/// One step of `cfg` through the multi-tensor step with every storage the
/// step has a path for: f32, f64, bfloat16, float16 and 8-bit state; f32,
/// f64, bfloat16 (with and without an f32 master) and float16 params.
fn every_storage(level: SimdLevel, cfg: &AdamConfig, b: &mut Buffers) {
    let scalars = [StepScalars::new(cfg, 2).unwrap()];
    // Stochastic rounding is for 16-bit params only: the others refuse it.
    let done = |r: Result<(), StepError>| match r {
        Err(StepError::RoundingNot16Bit { .. }) if cfg.stochastic_rounding => {}
        r => r.unwrap(),
    };
    let step32 = |t: MixedTensorMut<'_, f32>| done(step_tensors_with(level, vec![t], &scalars));
    let step64 = |t: MixedTensorMut<'_, f64>| done(step_tensors_with(level, vec![t], &scalars));
    native_then_halves(step32, (&mut b.p32, &b.g32), &mut b.s32, &mut b.b16);
    step32(MixedTensorMut::new(
        StoredMut::F16(&mut b.h16[..]),
        Stored::F16(&b.gh16[..]),
        four(b.f16s.each_mut().map(|s| StoredMut::F16(&mut s[..]))),
        0,
    ));
    // 8-bit state: f32 params (the fused step), bfloat16 params with an f32
    // master and without one (the staged step).
    step32(MixedTensorMut::new(
        StoredMut::Native(&mut b.p32[..]),
        Stored::Native(&b.g32[..]),
        q8(&mut b.codes, &mut b.absmax),
        0,
    ));
    let mut with_master = MixedTensorMut::new(
        StoredMut::Bf16(&mut b.p16[..]),
        Stored::Bf16(&b.g16[..]),
        q8(&mut b.codes, &mut b.absmax),
        0,
    );
    with_master.master_param = Some(StoredMut::Native(&mut b.master[..]));
    step32(with_master);
    step32(MixedTensorMut::new(
        StoredMut::Bf16(&mut b.p16[..]),
        Stored::Bf16(&b.g16[..]),
        q8(&mut b.codes, &mut b.absmax),
        0,
    ));
    // f64 compute: native and bfloat16 state (staged through blocks).
    native_then_halves(step64, (&mut b.p64, &b.g64), &mut b.s64, &mut b.b16);
}

/// Every 8-bit kernel variant (each rule with and without L2 and momentum,
/// and Adam with AMSGrad) through `step_q8`, the fused step's entry.
fn every_q8_variant(level: SimdLevel, b: &mut Buffers) {
    let base = StepScalars::new(
        &AdamConfig {
            lr: 1e-2,
            momentum: 0.7,
            ..Default::default()
        },
        2,
    )
    .unwrap();
    let n = 2 * BLOCK + 13;
    for scalars in every_variant(base) {
        let [c0, c1, c2, c3] = &mut b.codes;
        let [a0, a1, a2, a3] = &mut b.absmax;
        let blocks = n.div_ceil(BLOCK);
        let piece = Q8Piece {
            param: &mut b.p32[..n],
            grad: &b.g32[..n],
            exp_avg: Q8State {
                codes: &mut c0[..n],
                absmax: &mut a0[..blocks],
            },
            exp_avg_sq: Q8State {
                codes: &mut c1[..n],
                absmax: &mut a1[..blocks],
            },
            max_exp_avg_sq: Some(Q8State {
                codes: &mut c2[..n],
                absmax: &mut a2[..blocks],
            }),
            velocity: Some(Q8State {
                codes: &mut c3[..n],
                absmax: &mut a3[..blocks],
            }),
        };
        step_q8(level, &scalars, 1.0, piece).unwrap();
    }
}

/// The codec and stochastic rounding on their own.
fn codec_and_rounding(level: SimdLevel, b: &mut Buffers) {
    let n = b.p32.len();
    for book in [&SIGNED, &UNSIGNED] {
        encode(level, book, &b.g32, &mut b.codes[0], &mut b.absmax[0]).unwrap();
        decode(level, book, &b.codes[0], &b.absmax[0], &mut b.s32[0]).unwrap();
    }
    let key = StochasticKey {
        seed: 7,
        step: 1,
        tensor: 0,
    };
    round_stochastic(level, key, 0, &b.g32, &mut b.p16[..n]).unwrap();
    round_stochastic(level, key, 0, &b.g32, &mut b.h16[..n]).unwrap();
}

/// Every path at `level`, on the calling thread (runs of one piece stay on
/// it) and on a pool of two threads (runs cut into units).
fn every_path(level: SimdLevel) {
    let configs = crate::quant::block_tests::configs();
    let stochastic = AdamConfig {
        lr: 1e-2,
        stochastic_rounding: true,
        rounding_seed: 3,
        ..Default::default()
    };
    let run = |n: usize| {
        let mut b = Buffers::new(n);
        for cfg in configs.iter().chain([&stochastic]) {
            every_storage(level, cfg, &mut b);
        }
        every_q8_variant(level, &mut b);
        codec_and_rounding(level, &mut b);
    };
    run(3 * BLOCK + 5);
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(2)
        .stack_size(STACK)
        .build()
        .unwrap();
    pool.install(|| run(2 * CHUNK + 3 * BLOCK + 5));
}

#[test]
fn every_step_path_runs_on_a_256_kib_stack_at_every_level_present() {
    let mut ran = Vec::new();
    for level in SimdLevel::supported() {
        std::thread::Builder::new()
            .name(format!("stack-{level}"))
            .stack_size(STACK)
            .spawn(move || every_path(level))
            .unwrap()
            .join()
            .unwrap();
        ran.push(level.name());
    }
    let absent: Vec<&str> = (SimdLevel::ALL.iter())
        .filter(|l| !l.is_supported())
        .map(|l| l.name())
        .collect();
    // Written past the test harness's capture, so that the output says it.
    let _ = writeln!(
        std::io::stderr(),
        "stack test (256 KiB): ran {}; not on this CPU: {}",
        ran.join(", "),
        if absent.is_empty() {
            "none".to_string()
        } else {
            absent.join(", ")
        }
    );
}
