//! Times one optimizer step of `radam::candle::Adam` against candle-nn's
//! `AdamW` (the same formula), side by side, on f32 vars:
//!
//!     cargo run --release --features candle --example bench_candle
//!     cargo run --release --features candle --example bench_candle -- --repeats 31
//!     cargo run --release --features candle --example bench_candle -- --case "200 x"
//!
//! Cases: one tensor of 1e6; the 288-tensor transformer-shaped set of
//! benchmarks/bench_cpu.py (24 blocks of width 384, 42.6M params); 200
//! tensors of 1000. Each optimizer steps its own vars from the same gradients
//! (a `GradStore` built once). In each repeat the two run one after the other,
//! in alternating order; a figure is the median over the repeats, the ratio
//! the median of the per-repeat ratios. Small cases time a batch of steps
//! per repeat, divided by its size. A third column times `radam::Adam` on
//! plain `Vec`s of the same shapes: what the candle adapter adds is the
//! difference.

use std::time::Instant;

use candle_core::backprop::GradStore;
use candle_core::{Device, Tensor, Var};
use candle_nn::{AdamW, Optimizer, ParamsAdamW};
use radam::AdamConfig;

/// benchmarks/bench_cpu.py's `transformer_shapes`: 12 tensors per block
/// (fused qkv and output projections with biases, the MLP width -> 4 width ->
/// width with biases, two LayerNorms).
fn transformer_shapes(blocks: usize, width: usize) -> Vec<Vec<usize>> {
    let (w, h) = (width, 4 * width);
    let block: [&[usize]; 12] = [
        &[3 * w, w],
        &[3 * w],
        &[w, w],
        &[w],
        &[h, w],
        &[h],
        &[w, h],
        &[w],
        &[w],
        &[w],
        &[w],
        &[w],
    ];
    (0..blocks)
        .flat_map(|_| block.iter().map(|s| s.to_vec()))
        .collect()
}

fn median(mut x: Vec<f64>) -> f64 {
    x.sort_by(f64::total_cmp);
    x[x.len() / 2]
}

fn vars(shapes: &[Vec<usize>], seed: u64) -> candle_core::Result<Vec<Var>> {
    let cpu = &Device::Cpu;
    shapes
        .iter()
        .enumerate()
        .map(|(i, s)| {
            let t = Tensor::rand(-1f32, 1f32, s.as_slice(), cpu)?;
            Var::from_tensor(&(t + (seed + i as u64) as f64 * 1e-3)?)
        })
        .collect()
}

/// Seconds per step: radam::candle, candle-nn, radam::Adam on Vecs; and the
/// median ratio of the first two.
fn time_case(shapes: &[Vec<usize>], repeats: usize) -> candle_core::Result<[f64; 4]> {
    let total: usize = shapes.iter().map(|s| s.iter().product::<usize>()).sum();
    let ours = vars(shapes, 0)?;
    let theirs = vars(shapes, 0)?;
    let mut grads = GradStore::default();
    for (a, b) in ours.iter().zip(&theirs) {
        let g = Tensor::rand(-1f32, 1f32, a.shape(), &Device::Cpu)?;
        grads.insert(a.as_tensor(), g.clone());
        grads.insert(b.as_tensor(), g);
    }
    let sizes: Vec<usize> = ours.iter().map(|v| v.elem_count()).collect();
    let mut core =
        radam::Adam::<f32>::new(AdamConfig::adamw(), &sizes).map_err(candle_core::Error::wrap)?;
    let mut params: Vec<Vec<f32>> = ours
        .iter()
        .map(|v| v.flatten_all()?.to_vec1())
        .collect::<candle_core::Result<_>>()?;
    let flat_grads: Vec<Vec<f32>> = ours
        .iter()
        .map(|v| {
            grads
                .get(v.as_tensor())
                .expect("inserted above")
                .flatten_all()?
                .to_vec1()
        })
        .collect::<candle_core::Result<_>>()?;
    let grad_slices: Vec<&[f32]> = flat_grads.iter().map(|g| &g[..]).collect();
    let mut radam = radam::candle::Adam::new(ours, AdamConfig::adamw())?;
    let mut adamw = AdamW::new(theirs, ParamsAdamW::default())?;
    // Enough steps per repeat for about 20 ms of radam at 1 GB/s.
    let batch = (2e7 / (28.0 * total as f64)).clamp(1.0, 200.0) as usize;
    let time = |opt: &mut dyn FnMut() -> candle_core::Result<()>| {
        let start = Instant::now();
        for _ in 0..batch {
            opt()?;
        }
        Ok::<f64, candle_core::Error>(start.elapsed().as_secs_f64() / batch as f64)
    };
    let (mut a, mut b, mut c_core, mut ratios) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for repeat in 0..repeats + 2 {
        let mut step_radam = || radam.step(&grads);
        let (r, c) = if repeat % 2 == 0 {
            let r = time(&mut step_radam)?;
            (r, time(&mut || adamw.step(&grads))?)
        } else {
            let c = time(&mut || adamw.step(&grads))?;
            (time(&mut step_radam)?, c)
        };
        let plain = time(&mut || {
            let mut slices: Vec<&mut [f32]> = params.iter_mut().map(|p| &mut p[..]).collect();
            core.step(&mut slices, &grad_slices)
                .map_err(candle_core::Error::wrap)
        })?;
        // The first two repeats warm up (page faults, caches).
        if repeat >= 2 {
            a.push(r);
            b.push(c);
            c_core.push(plain);
            ratios.push(c / r);
        }
    }
    Ok([median(a), median(b), median(c_core), median(ratios)])
}

fn main() -> candle_core::Result<()> {
    let (mut repeats, mut only) = (15, None);
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        match (flag.as_str(), args.next()) {
            ("--repeats", Some(n)) if n.parse::<usize>().is_ok_and(|n| n > 0) => {
                repeats = n.parse().unwrap_or(repeats)
            }
            ("--case", Some(name)) => only = Some(name),
            _ => {
                eprintln!("bench_candle: usage: bench_candle [--repeats N > 0] [--case NAME-PART]");
                std::process::exit(2);
            }
        }
    }
    println!(
        "radam {} SIMD, {} threads; f32 vars; medians of {repeats} repeats",
        radam::SimdLevel::detect().name(),
        radam::num_threads()
    );
    println!(
        "{:<36} {:>14} {:>14} {:>9} {:>14}",
        "case", "radam (ms)", "candle-nn (ms)", "speedup", "on Vecs (ms)"
    );
    let cases: [(&str, Vec<Vec<usize>>); 3] = [
        ("1 x 1e6", vec![vec![1_000_000]]),
        (
            "288 tensors (transformer, 42.6M)",
            transformer_shapes(24, 384),
        ),
        ("200 x 1000", vec![vec![1000]; 200]),
    ];
    for (name, shapes) in cases {
        if only
            .as_ref()
            .is_some_and(|part| !name.contains(part.as_str()))
        {
            continue;
        }
        let [ours, theirs, plain, ratio] = time_case(&shapes, repeats)?;
        println!(
            "{name:<36} {:>14.3} {:>14.3} {:>8.1}x {:>14.3}",
            ours * 1e3,
            theirs * 1e3,
            ratio,
            plain * 1e3
        );
    }
    Ok(())
}
