//! Times the 8-bit state building blocks on one thread at each SIMD level
//! this CPU has: blockwise encode and decode, and the 8-bit step (through
//! `step_tensors`, as radam runs it: the fused block step for float32 params)
//! against the float32-state step on the same data in the same run (the two
//! steps alternate, so drift on a busy machine hits both alike); and
//! stochastic rounding of f32 into bfloat16 and float16.
//!
//!     cargo run --release --example bench_q8 -- 32768 1e6 2e7
//!
//! Sizes are element counts (`1e6` style accepted). Figures are medians in
//! ns per element; "q8/f32" is the fused 8-bit step's time over the float32
//! step's (bytes moved per parameter: 28 for float32 state, 16.03 for 8-bit).
//! On Linux the time is the thread's CPU time, so that a busy machine's other
//! work (time this thread spends waiting for a core) does not count; `--wall`
//! times with the wall clock instead.

use std::time::Instant;

/// Seconds of CPU time this thread has used (Linux), or of wall time.
fn now(wall: bool) -> f64 {
    #[cfg(target_os = "linux")]
    if !wall {
        #[repr(C)]
        struct Timespec {
            sec: i64,
            nsec: i64,
        }
        extern "C" {
            fn clock_gettime(clock: i32, ts: *mut Timespec) -> i32;
        }
        const CLOCK_THREAD_CPUTIME_ID: i32 = 3;
        let mut ts = Timespec { sec: 0, nsec: 0 };
        // SAFETY: clock_gettime writes one timespec, which `ts` is.
        if unsafe { clock_gettime(CLOCK_THREAD_CPUTIME_ID, &mut ts) } == 0 {
            return ts.sec as f64 + ts.nsec as f64 * 1e-9;
        }
    }
    let _ = wall;
    static START: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();
    START.get_or_init(Instant::now).elapsed().as_secs_f64()
}

use half::{bf16, f16};
use radam::quant::{blocks, decode, encode, round_stochastic, StochasticKey, SIGNED, UNSIGNED};
use radam::{
    step_tensors_with, AdamConfig, MixedTensorMut, SimdLevel, State, StepScalars, Stored,
    StoredMut, Tensor, TensorMut,
};

fn median(mut t: Vec<f64>) -> f64 {
    t.sort_by(f64::total_cmp);
    t[t.len() / 2]
}

fn main() {
    let mut sizes = Vec::new();
    let mut wall = false;
    for arg in std::env::args().skip(1) {
        if arg == "--wall" {
            wall = true;
            continue;
        }
        match arg.parse::<f64>() {
            Ok(x) if x.is_finite() && x >= 1.0 && x.fract() == 0.0 => sizes.push(x as usize),
            _ => {
                eprintln!("bench_q8: each argument is an element count (e.g. 1e6), got {arg:?}");
                std::process::exit(2);
            }
        }
    }
    if sizes.is_empty() {
        sizes = vec![32_768, 1_000_000];
    }
    let pool = rayon::ThreadPoolBuilder::new().num_threads(1).build();
    let pool = match pool {
        Ok(pool) => pool,
        Err(e) => {
            eprintln!("bench_q8: {e}");
            std::process::exit(1);
        }
    };
    let clock = if wall { "wall" } else { "thread CPU" };
    println!("one thread; ns per element, medians of {clock} time");
    println!(
        "{:>9} {:>9} {:>8} {:>8} {:>9} {:>9} {:>7} {:>8} {:>8}",
        "n", "level", "encode", "decode", "f32 step", "q8 step", "q8/f32", "sr bf16", "sr f16"
    );
    for n in sizes {
        pool.install(|| bench(n, wall));
    }
}

fn bench(n: usize, wall: bool) {
    let nb = blocks(n);
    let wave = |i: usize, f: f32| ((i as f32 * f).sin() + 0.1 * (i as f32 * 7.3 * f).cos()) * 1e-3;
    let grad: Vec<f32> = (0..n).map(|i| wave(i, 3e-3)).collect();
    let param0: Vec<f32> = (0..n).map(|i| (i as f32 * 1e-3).sin()).collect();
    let m0: Vec<f32> = (0..n).map(|i| wave(i, 1e-2) * 0.3).collect();
    let v0: Vec<f32> = m0.iter().map(|m| m * m + 1e-9).collect();
    let scalars = StepScalars::new(&AdamConfig::default(), 10).expect("valid config");
    // Long enough runs: about 0.2 s per measurement, at least 11 samples.
    let reps = ((2e8 / n as f64) as usize).clamp(11, 4001);
    for level in SimdLevel::supported() {
        let (mut codes, mut absmax) = (vec![0u8; n], vec![0f32; nb]);
        let mut out = vec![0f32; n];
        let time = |f: &mut dyn FnMut()| {
            let t0 = now(wall);
            f();
            (now(wall) - t0) * 1e9 / n as f64
        };
        let run = |r: Result<(), radam::StepError>| {
            if let Err(e) = r {
                eprintln!("bench_q8: {e}");
                std::process::exit(1);
            }
        };
        let (mut enc, mut dec, mut sr_b, mut sr_h) =
            (Vec::new(), Vec::new(), Vec::new(), Vec::new());
        let (mut b16, mut h16) = (vec![bf16::ZERO; n], vec![f16::ZERO; n]);
        let key = StochasticKey {
            seed: 1,
            step: 2,
            tensor: 0,
        };
        for _ in 0..reps {
            enc.push(time(&mut || {
                run(encode(level, &SIGNED, &m0, &mut codes, &mut absmax))
            }));
            dec.push(time(&mut || {
                run(decode(level, &SIGNED, &codes, &absmax, &mut out))
            }));
            sr_b.push(time(&mut || {
                run(round_stochastic(level, key, 0, &param0, &mut b16))
            }));
            sr_h.push(time(&mut || {
                run(round_stochastic(level, key, 0, &param0, &mut h16))
            }));
        }
        // float32 state and 8-bit state holding the same moments.
        let (mut p32, mut m32, mut v32) = (param0.clone(), m0.clone(), v0.clone());
        let mut p8 = param0.clone();
        let (mut mc, mut ma) = (vec![0u8; n], vec![0f32; nb]);
        let (mut vc, mut va) = (vec![0u8; n], vec![0f32; nb]);
        run(encode(level, &SIGNED, &m0, &mut mc, &mut ma));
        run(encode(level, &UNSIGNED, &v0, &mut vc, &mut va));
        let (mut f32_times, mut q8_times) = (Vec::new(), Vec::new());
        for _ in 0..reps {
            f32_times.push(time(&mut || {
                let state = State::new(&mut m32[..], &mut v32[..], None, None);
                let t = TensorMut::new(&mut p32[..], &grad[..], state, 0);
                run(step_tensors_with(level, vec![t], &[scalars]))
            }));
            q8_times.push(time(&mut || {
                // Through the multi-tensor step, as radam runs it.
                let q8 = |codes, absmax| StoredMut::Q8 { codes, absmax };
                let state = State::new(
                    q8(&mut mc[..], &mut ma[..]),
                    q8(&mut vc[..], &mut va[..]),
                    None,
                    None,
                );
                let t: MixedTensorMut<'_, f32> = Tensor::new(
                    StoredMut::Native(&mut p8[..]),
                    Stored::Native(&grad[..]),
                    state,
                    0,
                );
                run(step_tensors_with(level, vec![t], &[scalars]))
            }));
        }
        let (f, q) = (median(f32_times), median(q8_times));
        println!(
            "{n:>9} {:>9} {:>8.3} {:>8.3} {:>9.3} {:>9.3} {:>7.2} {:>8.3} {:>8.3}",
            level.name(),
            median(enc),
            median(dec),
            f,
            q,
            q / f,
            median(sr_b),
            median(sr_h)
        );
    }
}
