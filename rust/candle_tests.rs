//! `radam::candle::Adam` (the `candle` feature): training against candle-nn's
//! own `AdamW`, skipped vars against AdamW written from its formula, 16-bit
//! vars, the refusals, and a saved and reloaded state resuming bit for bit.

use candle_core::backprop::GradStore;
use candle_core::{DType, Device, Tensor, Var, D};
use candle_nn::{AdamW, Optimizer, ParamsAdamW};

use crate::candle::Adam;
use crate::{AdamConfig, Algorithm};

type Result<T> = candle_core::Result<T>;

/// Deterministic values in [-scale, scale) (a fixed LCG), for data and weights.
fn values(n: usize, seed: u64, scale: f64) -> Vec<f64> {
    let mut x = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    (0..n)
        .map(|_| {
            x = x
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((x >> 11) as f64 / (1u64 << 53) as f64 * 2.0 - 1.0) * scale
        })
        .collect()
}

/// A two-layer MLP (8 -> 16 -> 1, tanh) on a fixed regression set.
struct Mlp {
    vars: Vec<Var>,
    x: Tensor,
    y: Tensor,
}

const SHAPES: [&[usize]; 4] = [&[8, 16], &[16], &[16, 1], &[1]];

impl Mlp {
    fn new(dtype: DType) -> Result<Self> {
        let cpu = &Device::Cpu;
        let vars = SHAPES
            .iter()
            .enumerate()
            .map(|(i, &shape)| {
                let n = shape.iter().product();
                let t = Tensor::from_vec(values(n, i as u64, 0.5), shape, cpu)?;
                Var::from_tensor(&t.to_dtype(dtype)?)
            })
            .collect::<Result<Vec<_>>>()?;
        let x = Tensor::from_vec(values(64 * 8, 100, 1.0), (64, 8), cpu)?.to_dtype(dtype)?;
        let y = x.sin()?.sum_keepdim(D::Minus1)?;
        Ok(Mlp { vars, x, y })
    }

    fn loss(&self) -> Result<Tensor> {
        let [w1, b1, w2, b2] = [0, 1, 2, 3].map(|i| self.vars[i].as_tensor());
        let h = self.x.matmul(w1)?.broadcast_add(b1)?.tanh()?;
        let out = h.matmul(w2)?.broadcast_add(b2)?;
        (out - &self.y)?.sqr()?.mean_all()
    }

    fn flat(&self) -> Result<Vec<f64>> {
        let mut all = Vec::new();
        for v in &self.vars {
            all.extend(v.flatten_all()?.to_dtype(DType::F64)?.to_vec1::<f64>()?);
        }
        Ok(all)
    }
}

fn max_diff(a: &[f64], b: &[f64]) -> f64 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f64::max)
}

/// candle-nn's `AdamW` formula: its options as radam's.
fn as_radam(lr: f64) -> AdamConfig {
    let p = ParamsAdamW::default();
    AdamConfig {
        lr,
        beta1: p.beta1,
        beta2: p.beta2,
        eps: p.eps,
        weight_decay: p.weight_decay,
        decoupled_weight_decay: true,
        ..AdamConfig::default()
    }
}

/// Train an MLP 200 steps with each optimizer (lr 1e-2, then 3e-3 from step
/// 100) and return the params of radam's and candle-nn's, and the start.
fn train_both(dtype: DType) -> Result<(Vec<f64>, Vec<f64>, Vec<f64>)> {
    let (ours, theirs) = (Mlp::new(dtype)?, Mlp::new(dtype)?);
    let start = ours.flat()?;
    let mut radam = Adam::new(ours.vars.clone(), as_radam(1e-2))?;
    let params = ParamsAdamW {
        lr: 1e-2,
        ..ParamsAdamW::default()
    };
    let mut adamw = AdamW::new(theirs.vars.clone(), params)?;
    for step in 0..200 {
        if step == 100 {
            radam.set_learning_rate(3e-3);
            adamw.set_learning_rate(3e-3);
        }
        radam.backward_step(&ours.loss()?)?;
        adamw.backward_step(&theirs.loss()?)?;
    }
    assert_eq!(radam.learning_rate(), 3e-3);
    assert_eq!(radam.step_count(), 200);
    Ok((ours.flat()?, theirs.flat()?, start))
}

#[test]
fn an_mlp_trained_in_f64_equals_candle_nns_adamw() -> Result<()> {
    let (ours, theirs, start) = train_both(DType::F64)?;
    assert!(max_diff(&ours, &start) > 0.1, "training moved nothing");
    let diff = max_diff(&ours, &theirs);
    assert!(
        diff < 1e-9,
        "radam and candle-nn's AdamW differ by {diff:e}"
    );
    Ok(())
}

#[test]
fn an_mlp_trained_in_f32_equals_candle_nns_adamw_within_rounding() -> Result<()> {
    let (ours, theirs, _) = train_both(DType::F32)?;
    let (exact, _, _) = train_both(DType::F64)?;
    // Each f32 run strays from the f64 trajectory by its own rounding; the two
    // are within a few times that of each other.
    let rounding = max_diff(&theirs, &exact).max(max_diff(&ours, &exact));
    let diff = max_diff(&ours, &theirs);
    assert!(rounding < 1e-4, "f32 strays {rounding:e} from f64");
    assert!(
        diff <= 2.0 * rounding,
        "f32 runs differ by {diff:e}, rounding {rounding:e}"
    );
    Ok(())
}

#[test]
fn many_vars_step_as_candle_nns_adamw() -> Result<()> {
    let n = 300;
    let make = || -> Result<Vec<Var>> {
        (0..n)
            .map(|i| Var::from_vec(values(7, i as u64, 1.0), 7, &Device::Cpu))
            .collect()
    };
    let (ours, theirs) = (make()?, make()?);
    let mut radam = Adam::new(ours.clone(), as_radam(1e-2))?;
    let mut adamw = AdamW::new_lr(theirs.clone(), 1e-2)?;
    for _ in 0..3 {
        for (vars, opt) in [(&ours, &mut radam as &mut dyn Step), (&theirs, &mut adamw)] {
            let mut loss = vars[0].as_tensor().sqr()?.sum_all()?;
            for v in &vars[1..] {
                loss = (loss + v.as_tensor().sin()?.sum_all()?)?;
            }
            opt.backward(&loss)?;
        }
    }
    for (a, b) in ours.iter().zip(&theirs) {
        let (a, b) = (a.to_vec1::<f64>()?, b.to_vec1::<f64>()?);
        assert!(max_diff(&a, &b) < 1e-12);
    }
    Ok(())
}

/// Both optimizers behind one reference, for the loop above.
trait Step {
    fn backward(&mut self, loss: &Tensor) -> Result<()>;
}

impl<O: Optimizer> Step for O {
    fn backward(&mut self, loss: &Tensor) -> Result<()> {
        self.backward_step(loss)
    }
}

/// AdamW (Loshchilov & Hutter, with Adam's bias corrections at step `t`),
/// written from the formula: what one var with gradient `g` becomes.
fn adamw_step(p: &mut [f64], m: &mut [f64], v: &mut [f64], g: &[f64], t: i32, c: &AdamConfig) {
    for i in 0..p.len() {
        m[i] = c.beta1 * m[i] + (1.0 - c.beta1) * g[i];
        v[i] = c.beta2 * v[i] + (1.0 - c.beta2) * g[i] * g[i];
        let m_hat = m[i] / (1.0 - c.beta1.powi(t));
        let v_hat = v[i] / (1.0 - c.beta2.powi(t));
        p[i] = p[i] * (1.0 - c.lr * c.weight_decay) - c.lr * m_hat / (v_hat.sqrt() + c.eps);
    }
}

#[test]
fn a_var_without_a_gradient_is_skipped_and_its_count_stays() -> Result<()> {
    let config = as_radam(0.05);
    let start = [values(5, 1, 1.0), values(3, 2, 1.0)];
    let vars = [
        Var::from_slice(&start[0], 5, &Device::Cpu)?,
        Var::from_slice(&start[1], 3, &Device::Cpu)?,
    ];
    let mut opt = Adam::new(vars.to_vec(), config)?;
    let mut expected = start.clone();
    let mut moments = [[vec![0.0; 5], vec![0.0; 5]], [vec![0.0; 3], vec![0.0; 3]]];
    let mut counts = [0, 0];
    for step in 0..9u64 {
        let mut grads = GradStore::default();
        // Var 1 gets a gradient on every third step only.
        let has = [true, step % 3 == 0];
        for k in 0..2 {
            if has[k] {
                let g = values(start[k].len(), 10 + step, 1.0);
                grads.insert(
                    vars[k].as_tensor(),
                    Tensor::from_slice(&g, g.len(), &Device::Cpu)?,
                );
                counts[k] += 1;
                let [m, v] = &mut moments[k];
                adamw_step(&mut expected[k], m, v, &g, counts[k], &config);
            }
        }
        opt.step(&grads)?;
    }
    assert_eq!(opt.var_step_counts(), [9, 3]);
    for k in 0..2 {
        let got = vars[k].to_vec1::<f64>()?;
        assert!(
            max_diff(&got, &expected[k]) < 1e-14,
            "var {k}: {got:?} {:?}",
            expected[k]
        );
    }
    Ok(())
}

/// A step with the given gradient for each var.
fn step_with(opt: &mut Adam, vars: &[Var], grads: &[Tensor]) -> Result<()> {
    let mut store = GradStore::default();
    for (v, g) in vars.iter().zip(grads) {
        store.insert(v.as_tensor(), g.clone());
    }
    opt.step(&store)
}

/// A step of one var.
fn step_one(opt: &mut Adam, var: &Var, grad: &Tensor) -> Result<()> {
    step_with(opt, std::slice::from_ref(var), std::slice::from_ref(grad))
}

#[test]
fn sixteen_bit_vars_follow_an_f32_var_rounded() -> Result<()> {
    // With master weights the f32 copy steps exactly as an f32 var fed the
    // same (16-bit, widened exactly) gradients; the var holds it rounded.
    for dtype in [DType::BF16, DType::F16] {
        let start = Tensor::from_vec(values(300, 5, 1.0), 300, &Device::Cpu)?.to_dtype(dtype)?;
        let half = Var::from_tensor(&start)?;
        let single = Var::from_tensor(&start.to_dtype(DType::F32)?)?;
        let config = AdamConfig {
            lr: 1e-2,
            ..AdamConfig::default()
        };
        let mut ours = Adam::new(vec![half.clone()], config)?;
        ours.set_master_weights(true)?;
        let mut reference = Adam::new(vec![single.clone()], config)?;
        for step in 0..20 {
            let g = Tensor::from_vec(values(300, 50 + step, 1.0), 300, &Device::Cpu)?;
            let g = g.to_dtype(dtype)?;
            step_one(&mut ours, &half, &g)?;
            step_one(&mut reference, &single, &g.to_dtype(DType::F32)?)?;
            let want = single
                .to_dtype(dtype)?
                .to_dtype(DType::F32)?
                .to_vec1::<f32>()?;
            let got = half.to_dtype(DType::F32)?.to_vec1::<f32>()?;
            assert_eq!(got, want, "{dtype:?} step {step}");
        }
        let moved = half
            .to_dtype(DType::F32)?
            .sub(&start.to_dtype(DType::F32)?)?;
        assert!(moved.abs()?.max_all()?.to_scalar::<f32>()? > 0.1);
    }
    Ok(())
}

#[test]
fn sixteen_bit_vars_without_master_weights_round_each_step() -> Result<()> {
    // Without a master copy each step starts from the rounded value: the
    // same as an f32 var rounded back to bf16 after every step.
    let start = Tensor::from_vec(values(100, 6, 1.0), 100, &Device::Cpu)?.to_dtype(DType::BF16)?;
    let half = Var::from_tensor(&start)?;
    let config = AdamConfig {
        lr: 1e-2,
        ..AdamConfig::default()
    };
    let mut ours = Adam::new(vec![half.clone()], config)?;
    let single = Var::from_tensor(&start.to_dtype(DType::F32)?)?;
    let mut reference = Adam::new(vec![single.clone()], config)?;
    for step in 0..10 {
        let g = Tensor::from_vec(values(100, 70 + step, 1.0), 100, &Device::Cpu)?;
        let g = g.to_dtype(DType::BF16)?;
        step_one(&mut ours, &half, &g)?;
        step_one(&mut reference, &single, &g.to_dtype(DType::F32)?)?;
        single.set(&single.to_dtype(DType::BF16)?.to_dtype(DType::F32)?)?;
        assert_eq!(
            half.to_dtype(DType::F32)?.to_vec1::<f32>()?,
            single.to_vec1::<f32>()?
        );
    }
    Ok(())
}

/// The error's text, which must name what it refuses.
fn refusal<T>(r: Result<T>) -> String {
    match r {
        Ok(_) => panic!("not refused"),
        Err(e) => e.to_string(),
    }
}

#[test]
fn vars_radam_cannot_step_are_refused_by_name() -> Result<()> {
    let cpu = &Device::Cpu;
    let good = Var::zeros(4, DType::F32, cpu)?;
    let ints = Var::zeros(4, DType::U32, cpu)?;
    let e = refusal(Adam::new(vec![good.clone(), ints], AdamConfig::default()));
    assert!(e.contains("var 1 has dtype u32"), "{e}");
    let e = refusal(Adam::new(
        vec![good.clone(), good.clone()],
        AdamConfig::default(),
    ));
    assert!(e.contains("var 1 shares its storage with var 0"), "{e}");
    let bad = AdamConfig {
        beta2: 1.0,
        ..AdamConfig::default()
    };
    let e = refusal(Adam::new(vec![good], bad));
    assert!(e.contains("betas[1]"), "{e}");
    Ok(())
}

#[test]
fn a_refused_step_writes_nothing() -> Result<()> {
    let cpu = &Device::Cpu;
    let a = Var::from_vec(vec![1.0f32, 2.0, 3.0], 3, cpu)?;
    let b = Var::from_vec(vec![4.0f32, 5.0, 6.0], 3, cpu)?;
    let vars = [a.clone(), b.clone()];
    let mut opt = Adam::new(vars.to_vec(), AdamConfig::default())?;
    let ok = |n: usize| Tensor::ones(n, DType::F32, cpu);
    step_with(&mut opt, &vars, &[ok(3)?, ok(3)?])?;
    let before = (a.to_vec1::<f32>()?, b.to_vec1::<f32>()?);
    let cases: Vec<(Vec<Tensor>, &str)> = vec![
        (
            vec![ok(3)?, ok(2)?],
            "the gradient of var 1 has shape [2], the var [3]",
        ),
        (
            vec![ok(3)?, ok(3)?.to_dtype(DType::F64)?],
            "the gradient of var 1 has dtype f64, the var f32",
        ),
        // Var 0's storage as var 1's gradient would wait on its own lock.
        (
            vec![ok(3)?, a.as_tensor().clone()],
            "gradient of var 1 is the storage of var 0",
        ),
    ];
    for (grads, message) in cases {
        let e = refusal(step_with(&mut opt, &vars, &grads));
        assert!(e.contains(message), "{e}");
    }
    opt.set_learning_rate(f64::NAN);
    assert!(opt.learning_rate().is_nan());
    let e = refusal(step_with(&mut opt, &vars, &[ok(3)?, ok(3)?]));
    assert!(e.contains("invalid lr"), "{e}");
    opt.set_schedule(|count| if count < 5 { -1.0 } else { 1e-3 });
    let e = refusal(step_with(&mut opt, &vars, &[ok(3)?, ok(3)?]));
    assert!(e.contains("invalid lr: -1"), "{e}");
    assert_eq!((a.to_vec1::<f32>()?, b.to_vec1::<f32>()?), before);
    assert_eq!(opt.var_step_counts(), [1, 1]);
    assert_eq!(opt.step_count(), 1);
    let amsgrad = AdamConfig {
        amsgrad: true,
        ..AdamConfig::default()
    };
    let e = refusal(opt.set_config(amsgrad));
    assert!(
        e.contains("invalid amsgrad: 1 (must be unchanged after construction)"),
        "{e}"
    );
    // Stochastic rounding is for 16-bit vars: refused for f32, after the
    // checks, before any write.
    opt.set_learning_rate(1e-3);
    let mut config = *opt.config();
    config.stochastic_rounding = true;
    opt.set_config(config)?;
    let e = refusal(step_with(&mut opt, &vars, &[ok(3)?, ok(3)?]));
    assert!(e.contains("stochastic_rounding"), "{e}");
    assert_eq!((a.to_vec1::<f32>()?, b.to_vec1::<f32>()?), before);
    assert_eq!(opt.var_step_counts(), [1, 1]);
    Ok(())
}

#[test]
fn a_strided_gradient_is_read_as_its_values() -> Result<()> {
    let cpu = &Device::Cpu;
    let start = values(6, 3, 1.0);
    let (ours, theirs) = (
        Var::from_slice(&start, (2, 3), cpu)?,
        Var::from_slice(&start, (2, 3), cpu)?,
    );
    let g = Tensor::from_vec(values(6, 4, 1.0), (3, 2), cpu)?.t()?;
    assert!(!g.is_contiguous());
    let mut a = Adam::new(vec![ours.clone()], as_radam(0.1))?;
    let mut b = Adam::new(vec![theirs.clone()], as_radam(0.1))?;
    step_one(&mut a, &ours, &g)?;
    step_one(&mut b, &theirs, &g.contiguous()?)?;
    assert_eq!(ours.to_vec2::<f64>()?, theirs.to_vec2::<f64>()?);
    Ok(())
}

/// Params as bits, to compare runs exactly.
fn bits(vars: &[Var]) -> Result<Vec<u64>> {
    let mut all = Vec::new();
    for v in vars {
        let flat = v.flatten_all()?.to_dtype(DType::F64)?.to_vec1::<f64>()?;
        all.extend(flat.iter().map(|x| x.to_bits()));
    }
    Ok(all)
}

fn copies(vars: &[Var]) -> Result<Vec<Var>> {
    vars.iter()
        .map(|v| Var::from_tensor(&v.as_tensor().copy()?))
        .collect()
}

/// Train 10 steps, save, train 10 more; a fresh optimizer on copies of the
/// vars at the save, loaded, takes the same 10 steps bit for bit.
fn resumes_bit_for_bit(dtype: DType, config: AdamConfig, master: bool) -> Result<()> {
    let model = Mlp::new(dtype)?;
    let schedule = |count: u64| 1e-2 / (1.0 + count as f64);
    let build = |vars: Vec<Var>| -> Result<Adam> {
        let mut opt = Adam::new(vars, config)?;
        opt.set_master_weights(master)?;
        opt.set_schedule(schedule);
        Ok(opt)
    };
    let mut opt = build(model.vars.clone())?;
    for _ in 0..10 {
        opt.backward_step(&model.loss()?)?;
    }
    let dir = std::env::temp_dir().join(format!("radam-candle-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let file = dir.join(format!("{dtype:?}-{master}.safetensors"));
    opt.save(&file)?;
    let resumed = Mlp {
        vars: copies(&model.vars)?,
        x: model.x.clone(),
        y: model.y.clone(),
    };
    for _ in 0..10 {
        opt.backward_step(&model.loss()?)?;
    }
    let mut again = build(resumed.vars.clone())?;
    again.load(&file)?;
    assert_eq!(again.step_count(), 10);
    assert_eq!(again.learning_rate(), schedule(10));
    for _ in 0..10 {
        again.backward_step(&resumed.loss()?)?;
    }
    assert_eq!(bits(&resumed.vars)?, bits(&model.vars)?);
    // Without the state the same steps go elsewhere (the test can fail).
    let mut fresh_vars = copies(&resumed.vars)?;
    let mut fresh = build(fresh_vars.clone())?;
    let fresh_model = Mlp {
        vars: std::mem::take(&mut fresh_vars),
        x: model.x.clone(),
        y: model.y.clone(),
    };
    fresh.backward_step(&fresh_model.loss()?)?;
    again.backward_step(&resumed.loss()?)?;
    assert_ne!(bits(&resumed.vars)?, bits(&fresh_model.vars)?);
    std::fs::remove_file(&file)?;
    Ok(())
}

#[test]
fn a_saved_state_resumes_bit_for_bit() -> Result<()> {
    let amsgrad = AdamConfig {
        amsgrad: true,
        ..AdamConfig::adamw()
    };
    resumes_bit_for_bit(DType::F64, amsgrad, false)?;
    let nadam = AdamConfig {
        algorithm: Algorithm::NAdam,
        momentum: 0.5,
        ..AdamConfig::default()
    };
    resumes_bit_for_bit(DType::F32, nadam, false)?;
    resumes_bit_for_bit(DType::BF16, AdamConfig::adamw(), true)?;
    Ok(())
}

#[test]
fn a_state_file_for_other_vars_is_refused_and_changes_nothing() -> Result<()> {
    let cpu = &Device::Cpu;
    let a = Var::from_vec(vec![1.0f32, 2.0, 3.0], 3, cpu)?;
    let mut opt = Adam::new(vec![a.clone()], AdamConfig::default())?;
    step_one(&mut opt, &a, &Tensor::ones(3, DType::F32, cpu)?)?;
    let dir = std::env::temp_dir().join(format!("radam-candle-refused-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let file = dir.join("state.safetensors");
    opt.save(&file)?;
    let other = Var::from_vec(vec![1.0f32, 2.0], 2, cpu)?;
    let mut shorter = Adam::new(vec![other], AdamConfig::default())?;
    let e = refusal(shorter.load(&file));
    assert!(
        e.contains("\"0.exp_avg\" is F32 [3], var 0 needs F32 [2]"),
        "{e}"
    );
    assert_eq!(shorter.step_count(), 0);
    let amsgrad = AdamConfig {
        amsgrad: true,
        ..AdamConfig::default()
    };
    let mut more = Adam::new(vec![a.clone()], amsgrad)?;
    let e = refusal(more.load(&file));
    assert!(e.contains("no tensor \"0.max_exp_avg_sq\""), "{e}");
    let mut two = Adam::new(
        vec![a.clone(), Var::zeros(2, DType::F32, cpu)?],
        AdamConfig::default(),
    )?;
    let e = refusal(two.load(&file));
    assert!(e.contains("are not 2 numbers"), "{e}");
    std::fs::write(&file, b"not safetensors")?;
    let e = refusal(opt.load(&file));
    assert!(e.contains("state file"), "{e}");
    assert_eq!(opt.step_count(), 1);
    std::fs::remove_file(&file)?;
    Ok(())
}

#[test]
fn the_nest_of_locks_fits_any_stack() -> Result<()> {
    // A step nests one lock per var (about 4.4 KiB each in a debug build):
    // 1000 vars on a thread of 256 KiB continue on stack segments of their own.
    let stepped = std::thread::Builder::new()
        .stack_size(256 << 10)
        .spawn(move || -> Result<Vec<u64>> {
            let vars: Vec<Var> = (0..1000)
                .map(|i| Var::from_vec(values(7, i as u64, 1.0), 7, &Device::Cpu))
                .collect::<Result<_>>()?;
            let mut opt = Adam::new(vars.clone(), as_radam(1e-2))?;
            let grads: Vec<Tensor> = vars.iter().map(|v| v.ones_like()).collect::<Result<_>>()?;
            step_with(&mut opt, &vars, &grads)?;
            Ok(opt.var_step_counts())
        })?
        .join()
        .expect("no panic")?;
    assert_eq!(stepped, vec![1; 1000]);
    Ok(())
}

#[test]
fn vars_of_every_dtype_in_one_optimizer_step_as_each_alone() -> Result<()> {
    let cpu = &Device::Cpu;
    let dtypes = [DType::F64, DType::F32, DType::BF16, DType::F16, DType::F32];
    let make = || -> Result<Vec<Var>> {
        let sizes = [40, 70, 33, 20, 0];
        let made = dtypes.iter().zip(sizes).enumerate().map(|(i, (&d, n))| {
            let t = Tensor::from_vec(values(n, i as u64, 1.0), n, cpu)?;
            Var::from_tensor(&t.to_dtype(d)?)
        });
        made.collect()
    };
    let (together, alone) = (make()?, make()?);
    let config = AdamConfig {
        lr: 1e-2,
        ..AdamConfig::adamw()
    };
    let mut one = Adam::new(together.clone(), config)?;
    let mut each: Vec<Adam> = (alone.iter())
        .map(|v| Adam::new(vec![v.clone()], config))
        .collect::<Result<_>>()?;
    for step in 0..5 {
        let grads: Vec<Tensor> = (together.iter().enumerate())
            .map(|(i, v)| {
                let n = v.elem_count();
                Tensor::from_vec(values(n, 20 + i as u64 + step, 1.0), n, cpu)?.to_dtype(v.dtype())
            })
            .collect::<Result<_>>()?;
        step_with(&mut one, &together, &grads)?;
        for ((opt, v), g) in each.iter_mut().zip(&alone).zip(&grads) {
            step_one(opt, v, g)?;
        }
    }
    assert_eq!(one.var_step_counts(), [5; 5]);
    assert_eq!(bits(&together)?, bits(&alone)?);
    assert_ne!(bits(&together)?, bits(&make()?)?);
    Ok(())
}

#[test]
fn stochastic_rounding_of_bf16_vars_repeats_with_its_seed() -> Result<()> {
    // The same seed gives the same bits; rounding to nearest gives others
    // (updates of 1e-4 on values near 1 are under half a bfloat16 ulp).
    let run = |stochastic: bool, seed: u64| -> Result<Vec<u64>> {
        let start = Tensor::from_vec(values(500, 8, 1.0), 500, &Device::Cpu)?;
        let var = Var::from_tensor(&(start + 1.5)?.to_dtype(DType::BF16)?)?;
        let config = AdamConfig {
            lr: 1e-4,
            stochastic_rounding: stochastic,
            rounding_seed: seed,
            ..AdamConfig::default()
        };
        let mut opt = Adam::new(vec![var.clone()], config)?;
        for step in 0..10 {
            let g = Tensor::from_vec(values(500, 90 + step, 1.0), 500, &Device::Cpu)?;
            step_one(&mut opt, &var, &g.to_dtype(DType::BF16)?)?;
        }
        bits(&[var])
    };
    assert_eq!(run(true, 7)?, run(true, 7)?);
    assert_ne!(run(true, 7)?, run(true, 8)?);
    assert_ne!(run(true, 7)?, run(false, 7)?);
    Ok(())
}
