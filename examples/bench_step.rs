//! Times `radam::Adam::<f32>::step` on one tensor from Rust, no Python in the
//! loop: median and best of many back-to-back steps per size.
//!
//!     cargo run --release --example bench_step -- 32768 1e6 2e7
//!     RAYON_NUM_THREADS=1 cargo run --release --example bench_step -- 32768
//!
//! Sizes are element counts (`1e6` style accepted). GB/s counts the 28 bytes
//! an f32 step moves per parameter.

use std::time::Instant;

use radam::{Adam, AdamConfig};

fn main() {
    let mut sizes = Vec::new();
    for arg in std::env::args().skip(1) {
        match arg.parse::<f64>() {
            Ok(x) if x.is_finite() && x >= 1.0 && x.fract() == 0.0 => sizes.push(x as usize),
            _ => {
                eprintln!("bench_step: each argument is a parameter count (e.g. 1e6), got {arg:?}");
                std::process::exit(2);
            }
        }
    }
    let sizes = if sizes.is_empty() {
        vec![32_768, 1_000_000]
    } else {
        sizes
    };
    println!(
        "SIMD {}, {} threads",
        radam::SimdLevel::detect().name(),
        radam::num_threads()
    );
    for n in sizes {
        let (mut p, mut g) = (Vec::<f32>::new(), Vec::<f32>::new());
        if p.try_reserve_exact(n).is_err() || g.try_reserve_exact(n).is_err() {
            eprintln!("bench_step: cannot allocate {n} params");
            std::process::exit(2);
        }
        p.extend((0..n).map(|i| (i as f32 * 1e-3).sin()));
        g.extend((0..n).map(|i| (i as f32 * 3e-3).cos()));
        let mut opt = match Adam::<f32>::new(AdamConfig::default(), &[n]) {
            Ok(opt) => opt,
            Err(e) => {
                eprintln!("{e}");
                return;
            }
        };
        let mut step = |p: &mut Vec<f32>| {
            if let Err(e) = opt.step(&mut [&mut p[..]], &[&g[..]]) {
                eprintln!("{e}");
                std::process::exit(1);
            }
        };
        for _ in 0..20 {
            step(&mut p);
        }
        let iters = (2e8 / n.max(1) as f64).clamp(50.0, 20_000.0) as usize;
        let mut times: Vec<f64> = (0..iters)
            .map(|_| {
                let t0 = Instant::now();
                step(&mut p);
                t0.elapsed().as_secs_f64()
            })
            .collect();
        times.sort_by(f64::total_cmp);
        let median = times[times.len() / 2];
        println!(
            "{n:>11} params: median {:10.2} us, best {:10.2} us, {:.3} ns/param, {:.0} GB/s",
            median * 1e6,
            times[0] * 1e6,
            median * 1e9 / n.max(1) as f64,
            28.0 * n as f64 / median / 1e9
        );
    }
}
