//! radam as a candle optimizer (the `candle` feature): [`Adam`] implements
//! [`candle_nn::Optimizer`] with radam's [`AdamConfig`] as its config, and
//! steps each `Var`'s CPU storage in place.
//!
//! ```
//! use candle_core::{Device, Var};
//! use candle_nn::Optimizer;
//! use radam::AdamConfig;
//!
//! let w = Var::from_vec(vec![1.0f32, -2.0, 3.0], 3, &Device::Cpu)?;
//! let config = AdamConfig { lr: 0.1, ..AdamConfig::adamw() };
//! let mut opt = radam::candle::Adam::new(vec![w.clone()], config)?;
//! for _ in 0..100 {
//!     let loss = w.as_tensor().sqr()?.sum_all()?;
//!     opt.backward_step(&loss)?;
//! }
//! assert!(w.to_vec1::<f32>()?.iter().all(|x| x.abs() < 0.5));
//! # Ok::<(), candle_core::Error>(())
//! ```
//!
//! How it reaches the storage: candle lends a tensor's storage mutably only to
//! an in-place op, for the duration of the op's call. A step nests one such op
//! per var inside the previous one's call, so that every var is locked at once
//! and one multi-tensor radam call steps them all (small tensors share the
//! threads). The nesting is as deep as the number of vars stepped; where the
//! calling thread's stack runs low, it continues on a new stack segment
//! (`stacker`), on the same thread. While a step runs it holds every stepped
//! var's lock, so another thread touching those vars waits for it.
//!
//! Step counts are kept per var, as PyTorch keeps them: a var with no
//! gradient in the `GradStore` is skipped, and its count (and so its bias
//! corrections) does not advance. candle-nn's own `AdamW` advances one count
//! for all vars instead; the two agree whenever every var has a gradient.
//!
//! The moments are kept in the compute type (radam's 16-bit and 8-bit state
//! are not offered here yet).

use std::borrow::Cow;
use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::path::Path;

use candle_core::backprop::GradStore;
use candle_core::{CpuStorage, DType, Device, InplaceOp2, Layout, Storage, Tensor, Var};
use half::{bf16, f16};
use safetensors::tensor::{Dtype, SafeTensors, View};

use crate::config::AdamConfig;
use crate::error::{StepError, VarError};
use crate::multi::check_mixed;
use crate::optimizer::{check_fixed, zeroed, AdamState};
use crate::scalars::{Carry, Count, StepScalars, TensorSteps};
use crate::storage::{Stored, StoredMut};
use crate::tensor::{MixedTensorMut, Origin, Tensor as Record};

/// The stack a level of the nest may need below it, the last level's step
/// included (a level takes about 600 bytes in a release build, 4400 in a
/// debug build); with less left, the nest continues on a new segment of
/// [`STACK_SEGMENT`] bytes.
const RED_ZONE: usize = 256 << 10;
const STACK_SEGMENT: usize = 4 << 20;

/// The learning rate of each step: `schedule(count)`, `count` being the
/// steps already taken (0 for the first), as radam's Python schedules and
/// optax count. The value is validated like `lr`.
pub type Schedule = Box<dyn Fn(u64) -> f64 + Send + Sync>;

/// The moments of one var, in its compute type (f32 for 16-bit vars).
#[derive(Clone, Debug, PartialEq)]
enum Moments {
    F32(AdamState<f32>),
    F64(AdamState<f64>),
}

/// One var and what the optimizer keeps for it.
struct Slot {
    var: Var,
    moments: Moments,
    /// The f32 master copy of a 16-bit var (with master weights on).
    master: Option<Vec<f32>>,
    /// The steps this var has taken, and what they carried.
    count: Count,
}

/// Adam over candle `Var`s on the CPU, stepped in place by radam's kernel.
///
/// Every option of [`AdamConfig`] applies. f32 and f64 vars compute in their
/// own type; bf16 and f16 vars compute in f32 with f32 moments, and are
/// rounded to nearest even (or stochastically, with
/// [`AdamConfig::stochastic_rounding`]) unless [`Adam::set_master_weights`]
/// keeps an f32 master copy. Vars of several compute types are stepped by one
/// radam call per type, all checked before any is written.
pub struct Adam {
    slots: Vec<Slot>,
    config: AdamConfig,
    schedule: Option<Schedule>,
    steps: u64,
}

fn wrap(e: impl std::fmt::Display + Send + Sync + 'static) -> candle_core::Error {
    candle_core::Error::wrap(e)
}

/// The compute type of a var's dtype (f32 for 16-bit vars); others are refused.
fn compute_f64(index: usize, dtype: DType) -> Result<bool, VarError> {
    match dtype {
        DType::F64 => Ok(true),
        DType::F32 | DType::BF16 | DType::F16 => Ok(false),
        other => Err(VarError::Dtype {
            index,
            dtype: other.as_str().to_string(),
        }),
    }
}

/// The address of a tensor's CPU storage (None off the CPU or for other
/// dtypes): two non-empty storages are the same one when their addresses are.
fn storage_address(t: &Tensor) -> Option<usize> {
    let (storage, _) = t.storage_and_layout();
    match &*storage {
        Storage::Cpu(CpuStorage::F32(v)) => Some(v.as_ptr() as usize),
        Storage::Cpu(CpuStorage::F64(v)) => Some(v.as_ptr() as usize),
        Storage::Cpu(CpuStorage::BF16(v)) => Some(v.as_ptr() as usize),
        Storage::Cpu(CpuStorage::F16(v)) => Some(v.as_ptr() as usize),
        _ => None,
    }
}

/// Refuse a var radam cannot step in place: off the CPU, of another dtype, or
/// not contiguous.
fn check_var(index: usize, var: &Var) -> Result<(), VarError> {
    let device = match var.device() {
        Device::Cpu => None,
        Device::Cuda(_) => Some("cuda"),
        Device::Metal(_) => Some("metal"),
    };
    if let Some(device) = device {
        return Err(VarError::Device {
            index,
            device: device.to_string(),
        });
    }
    compute_f64(index, var.dtype())?;
    if !var.layout().is_contiguous() {
        return Err(VarError::NotContiguous {
            index,
            shape: var.dims().to_vec(),
            strides: var.stride().to_vec(),
        });
    }
    Ok(())
}

/// The first pair of equal addresses among `(address, index)`, as (later index, earlier index).
fn shared(mut addresses: Vec<(usize, usize)>) -> Option<(usize, usize)> {
    addresses.sort_unstable();
    addresses
        .windows(2)
        .find(|w| w[0].0 == w[1].0)
        .map(|w| (w[0].1.max(w[1].1), w[0].1.min(w[1].1)))
}

impl candle_nn::Optimizer for Adam {
    type Config = AdamConfig;

    /// Zeroed moments for each var; an error names the first var that is not
    /// on the CPU, not f32, f64, bf16 or f16, not contiguous, or shares its
    /// storage with another, and the first bad option.
    fn new(vars: Vec<Var>, config: AdamConfig) -> candle_core::Result<Self> {
        config.validate().map_err(wrap)?;
        let mut addresses = Vec::new();
        let mut slots = Vec::with_capacity(vars.len());
        for (index, var) in vars.into_iter().enumerate() {
            check_var(index, &var).map_err(wrap)?;
            let n = var.elem_count();
            if n > 0 {
                addresses.extend(storage_address(&var).map(|a| (a, index)));
            }
            let moments = match compute_f64(index, var.dtype()).map_err(wrap)? {
                true => Moments::F64(zeroed(&config, n)),
                false => Moments::F32(zeroed(&config, n)),
            };
            slots.push(Slot {
                var,
                moments,
                master: None,
                count: Count::default(),
            });
        }
        if let Some((index, other)) = shared(addresses) {
            return Err(wrap(VarError::SharedStorage { index, other }));
        }
        Ok(Adam {
            slots,
            config,
            schedule: None,
            steps: 0,
        })
    }

    /// One step of every var that has a gradient in `grads`; the others are
    /// left as they are, their step counts too. On error nothing is written.
    fn step(&mut self, grads: &GradStore) -> candle_core::Result<()> {
        self.step_grads(grads).map_err(|e| match e {
            Refused::Var(e) => wrap(e),
            Refused::Step(e) => wrap(e),
            Refused::Candle(e) => e,
        })
    }

    /// The learning rate of the next step (the schedule's value, with one).
    fn learning_rate(&self) -> f64 {
        self.next_config().lr
    }

    /// A constant learning rate from now on (replacing a schedule). The
    /// value is validated at the next step.
    fn set_learning_rate(&mut self, lr: f64) {
        self.schedule = None;
        self.config.lr = lr;
    }
}

/// Why a step did not happen.
enum Refused {
    Var(VarError),
    Step(StepError),
    Candle(candle_core::Error),
}

impl From<VarError> for Refused {
    fn from(e: VarError) -> Self {
        Refused::Var(e)
    }
}

impl From<StepError> for Refused {
    fn from(e: StepError) -> Self {
        Refused::Step(e)
    }
}

impl Adam {
    /// The options (`lr` as last set; a schedule overrides it).
    pub fn config(&self) -> &AdamConfig {
        &self.config
    }

    /// Change options between steps. What decides the state's buffers
    /// (AMSGrad, momentum on or off, AdaMax or not) is fixed at construction.
    pub fn set_config(&mut self, config: AdamConfig) -> candle_core::Result<()> {
        config.validate().map_err(wrap)?;
        check_fixed(&self.config, &config).map_err(wrap)?;
        self.config = config;
        Ok(())
    }

    /// Take each step's learning rate from `schedule(count)` (see [`Schedule`]);
    /// `count` is [`Adam::step_count`], so a reloaded state resumes the schedule.
    pub fn set_schedule(&mut self, schedule: impl Fn(u64) -> f64 + Send + Sync + 'static) {
        self.schedule = Some(Box::new(schedule));
    }

    /// Keep an f32 master copy of each bf16 and f16 var, stepped instead of
    /// it (the var receives it rounded), or drop the copies. Turned on, the
    /// copies start from the vars' current values.
    pub fn set_master_weights(&mut self, on: bool) -> candle_core::Result<()> {
        for slot in &mut self.slots {
            let sixteen = matches!(slot.var.dtype(), DType::BF16 | DType::F16);
            slot.master = match (on, sixteen) {
                (true, true) => Some(slot.var.flatten_all()?.to_dtype(DType::F32)?.to_vec1()?),
                _ => None,
            };
        }
        Ok(())
    }

    /// The number of steps taken (calls of `step` that did not fail).
    pub fn step_count(&self) -> u64 {
        self.steps
    }

    /// The steps each var has taken, in the order of the vars given.
    pub fn var_step_counts(&self) -> Vec<u64> {
        self.slots.iter().map(|s| s.count.steps).collect()
    }

    /// The vars, in the order given.
    pub fn vars(&self) -> impl Iterator<Item = &Var> {
        self.slots.iter().map(|s| &s.var)
    }

    /// The options of the next step: the schedule's `lr`, with one.
    fn next_config(&self) -> AdamConfig {
        let mut config = self.config;
        if let Some(schedule) = &self.schedule {
            config.lr = schedule(self.steps);
        }
        config
    }

    fn step_grads(&mut self, grads: &GradStore) -> Result<(), Refused> {
        let config = self.next_config();
        // The vars that step, each with its (contiguous) gradient.
        let mut stepping: Vec<(usize, Tensor)> = Vec::new();
        let mut addresses = Vec::new();
        for (index, slot) in self.slots.iter().enumerate() {
            let Some(grad) = grads.get(slot.var.as_tensor()) else {
                continue;
            };
            let var = &slot.var;
            let reason = if !grad.device().is_cpu() {
                Some("is not on the CPU".to_string())
            } else if grad.dtype() != var.dtype() {
                Some(format!(
                    "has dtype {}, the var {}",
                    grad.dtype().as_str(),
                    var.dtype().as_str()
                ))
            } else if grad.dims() != var.dims() {
                Some(format!(
                    "has shape {:?}, the var {:?}",
                    grad.dims(),
                    var.dims()
                ))
            } else {
                None
            };
            if let Some(reason) = reason {
                return Err(VarError::Grad { index, reason }.into());
            }
            // A strided gradient is copied (backprop's are contiguous).
            let grad = match grad.is_contiguous() {
                true => grad.clone(),
                false => grad.contiguous().map_err(Refused::Candle)?,
            };
            if var.elem_count() > 0 {
                addresses.extend(storage_address(var).map(|a| (a, index)));
                addresses.extend(storage_address(&grad).map(|a| (a, usize::MAX - index)));
            }
            stepping.push((index, grad));
        }
        // A gradient locked for reading while its storage is a var's would
        // wait on our own write lock; grads may share storage among themselves.
        let vars_only = addresses.iter().filter(|(_, i)| *i < self.slots.len());
        if let Some((index, other)) = shared(vars_only.copied().collect()) {
            return Err(VarError::SharedStorage { index, other }.into());
        }
        let mut clash = None;
        addresses.sort_unstable();
        for w in addresses.windows(2) {
            let (a, b) = (w[0], w[1]);
            if a.0 == b.0 && (a.1 < self.slots.len()) != (b.1 < self.slots.len()) {
                let (var, grad) = if a.1 < self.slots.len() {
                    (a.1, b.1)
                } else {
                    (b.1, a.1)
                };
                clash = Some((usize::MAX - grad, var));
                break;
            }
        }
        if let Some((index, var)) = clash {
            let reason = format!("is the storage of var {var}");
            return Err(VarError::Grad { index, reason }.into());
        }
        // One StepScalars per distinct count among the vars that step.
        let counts = stepping.iter().map(|(i, _)| (0, self.slots[*i].count));
        let steps = TensorSteps::plan(&[config], counts).map_err(|(_, e)| e)?;
        let nonempty = |k: &usize| self.slots[stepping[*k].0].var.elem_count() > 0;
        let pairs: Vec<(Tensor, Tensor)> = (0..stepping.len())
            .filter(nonempty)
            .map(|k| {
                let (i, grad) = &stepping[k];
                (self.slots[*i].var.as_tensor().clone(), grad.clone())
            })
            .collect();
        let plan: Vec<(usize, usize)> = (0..stepping.len())
            .filter(nonempty)
            .map(|k| (stepping[k].0, steps.index[k]))
            .collect();
        let groups = &steps.scalars;
        let slots = &mut self.slots;
        let mut outcome: Result<(), StepError> = Ok(());
        let mut finish = |locked: Vec<Locked<'_>>| {
            outcome = step_locked(slots, &plan, locked, groups);
            Ok(())
        };
        lock_rest(&pairs, Vec::with_capacity(pairs.len()), &mut finish).map_err(Refused::Candle)?;
        outcome?;
        for ((index, _), next) in stepping.iter().zip(&steps.next) {
            self.slots[*index].count = *next;
        }
        self.steps += 1;
        Ok(())
    }

    /// Write the state (moments, master copies, step counts) to a
    /// safetensors file: `"{i}.exp_avg"` and so on for var `i`, the counts in
    /// the metadata. Written to a temporary file renamed over `path`.
    pub fn save(&self, path: impl AsRef<Path>) -> candle_core::Result<()> {
        let path = path.as_ref();
        let refused = |reason: String| {
            wrap(VarError::StateFile {
                path: path.display().to_string(),
                reason,
            })
        };
        let mut views: Vec<(String, Saved<'_>)> = Vec::new();
        for (i, slot) in self.slots.iter().enumerate() {
            let shape = slot.var.dims().to_vec();
            let buffers: Vec<(&str, Values<'_>)> = match &slot.moments {
                Moments::F32(s) => s
                    .buffers()
                    .map(|(b, v)| (b.name(), Values::F32(v)))
                    .collect(),
                Moments::F64(s) => s
                    .buffers()
                    .map(|(b, v)| (b.name(), Values::F64(v)))
                    .collect(),
            };
            let master = slot
                .master
                .as_ref()
                .map(|m| ("master_param", Values::F32(m)));
            for (name, values) in buffers.into_iter().chain(master) {
                let shape = shape.clone();
                views.push((format!("{i}.{name}"), Saved { shape, values }));
            }
        }
        let list = |f: &dyn Fn(&Slot) -> u64| {
            let each: Vec<String> = self.slots.iter().map(|s| f(s).to_string()).collect();
            each.join(",")
        };
        let metadata = HashMap::from([
            ("format".to_string(), FORMAT.to_string()),
            ("steps".to_string(), self.steps.to_string()),
            ("counts".to_string(), list(&|s| s.count.steps)),
            (
                "mu_products".to_string(),
                list(&|s| s.count.carry.mu_product.to_bits()),
            ),
        ]);
        let bytes =
            safetensors::serialize(views, Some(metadata)).map_err(|e| refused(e.to_string()))?;
        let mut temporary = path.as_os_str().to_owned();
        temporary.push(".partial");
        std::fs::write(&temporary, bytes)
            .and_then(|()| std::fs::rename(&temporary, path))
            .map_err(|e| {
                let _ = std::fs::remove_file(&temporary);
                refused(e.to_string())
            })
    }

    /// Read a state that [`Adam::save`] wrote for the same vars (shapes and
    /// dtypes) and options (AMSGrad, momentum, master weights). On error the
    /// optimizer is as it was.
    pub fn load(&mut self, path: impl AsRef<Path>) -> candle_core::Result<()> {
        let path = path.as_ref();
        let refused = |reason: String| {
            wrap(VarError::StateFile {
                path: path.display().to_string(),
                reason,
            })
        };
        let bytes = std::fs::read(path).map_err(|e| refused(e.to_string()))?;
        let (_, header) = SafeTensors::read_metadata(&bytes).map_err(|e| refused(e.to_string()))?;
        let tensors = SafeTensors::deserialize(&bytes).map_err(|e| refused(e.to_string()))?;
        let info = header.metadata().clone().unwrap_or_default();
        let field = |name: &str| {
            info.get(name)
                .ok_or_else(|| refused(format!("no {name:?} in its metadata")))
        };
        if field("format")? != FORMAT {
            return Err(refused(format!("not a {FORMAT} file")));
        }
        let numbers = |name: &str| -> candle_core::Result<Vec<u64>> {
            let text = field(name)?;
            let parsed: Result<Vec<u64>, _> = match text.is_empty() {
                true => Ok(Vec::new()),
                false => text.split(',').map(str::parse).collect(),
            };
            match parsed {
                Ok(v) if v.len() == self.slots.len() => Ok(v),
                _ => Err(refused(format!(
                    "its {name:?} are not {} numbers",
                    self.slots.len()
                ))),
            }
        };
        let steps: u64 = field("steps")?
            .parse()
            .map_err(|_| refused("its \"steps\" is not a number".to_string()))?;
        let counts = numbers("counts")?;
        let products = numbers("mu_products")?;
        let mut expected = 0;
        let mut loaded = Vec::with_capacity(self.slots.len());
        for (i, slot) in self.slots.iter().enumerate() {
            let shape = slot.var.dims();
            let read = |name: &str, f64s: bool| -> candle_core::Result<Values<'static>> {
                let key = format!("{i}.{name}");
                let view = tensors
                    .tensor(&key)
                    .map_err(|_| refused(format!("no tensor {key:?}")))?;
                let dtype = if f64s { Dtype::F64 } else { Dtype::F32 };
                if view.dtype() != dtype || view.shape() != shape {
                    return Err(refused(format!(
                        "{key:?} is {:?} {:?}, var {i} needs {dtype:?} {shape:?}",
                        view.dtype(),
                        view.shape()
                    )));
                }
                Ok(Values::from_le(view.data(), f64s))
            };
            let f64s = matches!(slot.moments, Moments::F64(_));
            let present = match &slot.moments {
                Moments::F32(s) => s.buffers().map(|(b, _)| b.name()).collect::<Vec<_>>(),
                Moments::F64(s) => s.buffers().map(|(b, _)| b.name()).collect(),
            };
            let mut values = present
                .into_iter()
                .map(|name| read(name, f64s))
                .collect::<candle_core::Result<Vec<_>>>()?;
            let master = match slot.master {
                Some(_) => match read("master_param", false)? {
                    Values::Owned32(m) => Some(m),
                    _ => None,
                },
                None => None,
            };
            expected += values.len() + usize::from(master.is_some());
            let mut next = || values.remove(0);
            let moments = match &slot.moments {
                Moments::F32(s) => Moments::F32(s.as_ref().map(|_, _| next().into_f32())),
                Moments::F64(s) => Moments::F64(s.as_ref().map(|_, _| next().into_f64())),
            };
            loaded.push((moments, master));
        }
        if tensors.len() != expected {
            return Err(refused(format!(
                "it holds {} tensors, this optimizer's state {expected} (other vars or options?)",
                tensors.len()
            )));
        }
        for (i, (slot, (moments, master))) in self.slots.iter_mut().zip(loaded).enumerate() {
            slot.moments = moments;
            slot.master = master;
            slot.count = Count {
                steps: counts[i],
                carry: Carry {
                    mu_product: f64::from_bits(products[i]),
                },
            };
        }
        self.steps = steps;
        Ok(())
    }
}

/// The `format` entry of a state file's metadata.
const FORMAT: &str = "radam.candle.Adam/1";

/// A buffer of the state: borrowed to save, owned once loaded.
enum Values<'a> {
    F32(&'a [f32]),
    F64(&'a [f64]),
    Owned32(Vec<f32>),
    Owned64(Vec<f64>),
}

impl Values<'_> {
    fn from_le(bytes: &[u8], f64s: bool) -> Values<'static> {
        match f64s {
            true => Values::Owned64(
                bytes
                    .chunks_exact(8)
                    .map(|b| f64::from_le_bytes([b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]]))
                    .collect(),
            ),
            false => Values::Owned32(
                bytes
                    .chunks_exact(4)
                    .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                    .collect(),
            ),
        }
    }

    fn into_f32(self) -> Vec<f32> {
        match self {
            Values::Owned32(v) => v,
            Values::F32(v) => v.to_vec(),
            _ => Vec::new(),
        }
    }

    fn into_f64(self) -> Vec<f64> {
        match self {
            Values::Owned64(v) => v,
            Values::F64(v) => v.to_vec(),
            _ => Vec::new(),
        }
    }
}

/// A buffer as safetensors writes it (little-endian bytes, made one tensor at a time).
struct Saved<'a> {
    shape: Vec<usize>,
    values: Values<'a>,
}

impl View for Saved<'_> {
    fn dtype(&self) -> Dtype {
        match self.values {
            Values::F32(_) | Values::Owned32(_) => Dtype::F32,
            Values::F64(_) | Values::Owned64(_) => Dtype::F64,
        }
    }

    fn shape(&self) -> &[usize] {
        &self.shape
    }

    fn data(&self) -> Cow<'_, [u8]> {
        let bytes: Vec<u8> = match &self.values {
            Values::F32(v) => v.iter().flat_map(|x| x.to_le_bytes()).collect(),
            Values::Owned32(v) => v.iter().flat_map(|x| x.to_le_bytes()).collect(),
            Values::F64(v) => v.iter().flat_map(|x| x.to_le_bytes()).collect(),
            Values::Owned64(v) => v.iter().flat_map(|x| x.to_le_bytes()).collect(),
        };
        Cow::Owned(bytes)
    }

    fn data_len(&self) -> usize {
        match &self.values {
            Values::F32(v) => 4 * v.len(),
            Values::Owned32(v) => 4 * v.len(),
            Values::F64(v) => 8 * v.len(),
            Values::Owned64(v) => 8 * v.len(),
        }
    }
}

/// A var's storage, locked for writing, and its gradient's, locked for reading.
struct Locked<'a> {
    param: Param<'a>,
    grad: Grad<'a>,
}

fn span(layout: &Layout) -> candle_core::Result<std::ops::Range<usize>> {
    layout
        .contiguous_offsets()
        .map(|(start, end)| start..end)
        .ok_or_else(|| candle_core::Error::msg("radam::candle::Adam: a strided tensor"))
}

fn outside() -> candle_core::Error {
    candle_core::Error::msg("radam::candle::Adam: a layout outside its storage")
}

/// A var's storage (`Param`, locked for writing: `$mut` is `mut`) or its
/// gradient's (`Grad`), as the slice its layout spans, in each dtype the step
/// takes; `$of` takes it from a `CpuStorage` with `$get`.
macro_rules! spanned {
    ($name:ident, $of:ident, $get:ident $(, $mut:tt)?) => {
        enum $name<'a> {
            F32(&'a $($mut)? [f32]),
            F64(&'a $($mut)? [f64]),
            Bf16(&'a $($mut)? [bf16]),
            F16(&'a $($mut)? [f16]),
        }

        fn $of<'a>(
            storage: &'a $($mut)? CpuStorage,
            layout: &Layout,
        ) -> candle_core::Result<$name<'a>> {
            let span = span(layout)?;
            Ok(match storage {
                CpuStorage::F32(v) => $name::F32(v.$get(span).ok_or_else(outside)?),
                CpuStorage::F64(v) => $name::F64(v.$get(span).ok_or_else(outside)?),
                CpuStorage::BF16(v) => $name::Bf16(v.$get(span).ok_or_else(outside)?),
                CpuStorage::F16(v) => $name::F16(v.$get(span).ok_or_else(outside)?),
                _ => bail_dtype()?,
            })
        }
    };
}

spanned!(Param, param_of, get_mut, mut);
spanned!(Grad, grad_of, get);

fn bail_dtype<X>() -> candle_core::Result<X> {
    Err(candle_core::Error::msg(
        "radam::candle::Adam: a storage of another dtype than its tensor's",
    ))
}

/// What runs once every var is locked.
type Finish<'f> = dyn for<'x> FnMut(Vec<Locked<'x>>) -> candle_core::Result<()> + Send + 'f;

/// Lock each `(var, grad)` pair (the var for writing, through candle's
/// in-place op, the grad for reading), each inside the previous one's op, and
/// call `finish` with all of them locked. The nesting runs on the calling
/// thread; where its stack runs low, stacker continues it on a new segment.
fn lock_rest(
    pairs: &[(Tensor, Tensor)],
    locked: Vec<Locked<'_>>,
    finish: &mut Finish<'_>,
) -> candle_core::Result<()> {
    match pairs.split_first() {
        None => finish(locked),
        Some(((var, grad), rest)) => {
            let op = LockOne {
                locked: Cell::new(Some(locked)),
                rest,
                finish: RefCell::new(finish),
            };
            stacker::maybe_grow(RED_ZONE, STACK_SEGMENT, || var.inplace_op2(grad, &op))
        }
    }
}

/// The in-place op that holds one var's lock while the rest are taken.
struct LockOne<'a, 'r, 'f> {
    locked: Cell<Option<Vec<Locked<'a>>>>,
    rest: &'r [(Tensor, Tensor)],
    finish: RefCell<&'r mut Finish<'f>>,
}

impl InplaceOp2 for LockOne<'_, '_, '_> {
    fn name(&self) -> &'static str {
        "radam::candle::Adam::step"
    }

    fn cpu_fwd(
        &self,
        dst: &mut CpuStorage,
        dst_layout: &Layout,
        grad: &CpuStorage,
        grad_layout: &Layout,
    ) -> candle_core::Result<()> {
        let mut locked: Vec<Locked<'_>> = self.locked.take().unwrap_or_default();
        locked.push(Locked {
            param: param_of(dst, dst_layout)?,
            grad: grad_of(grad, grad_layout)?,
        });
        let mut finish = self
            .finish
            .try_borrow_mut()
            .map_err(|_| candle_core::Error::msg("radam::candle::Adam: re-entered"))?;
        lock_rest(self.rest, locked, &mut **finish)
    }
}

/// One radam call per compute type over the locked vars, all checked before
/// any is stepped. `plan[k]` is the slot and group of `locked[k]`.
fn step_locked(
    slots: &mut [Slot],
    plan: &[(usize, usize)],
    locked: Vec<Locked<'_>>,
    groups: &[StepScalars],
) -> Result<(), StepError> {
    let mut f32s: Vec<MixedTensorMut<'_, f32>> = Vec::new();
    let mut f64s: Vec<MixedTensorMut<'_, f64>> = Vec::new();
    let mut taken = slots.iter_mut().enumerate();
    for (&(index, group), Locked { param, grad }) in plan.iter().zip(locked) {
        let Some((_, slot)) = taken.find(|(i, _)| *i == index) else {
            break;
        };
        let origin = Some(Origin {
            tensor: index as u64,
            element: 0,
        });
        let master = slot.master.as_mut().map(|m| StoredMut::Native(&mut m[..]));
        match (&mut slot.moments, param, grad) {
            (Moments::F64(s), Param::F64(p), Grad::F64(g)) => f64s.push(Record {
                param: StoredMut::Native(p),
                grad: Stored::Native(g),
                master_param: None,
                state: s.as_mut().map(|_, v| StoredMut::Native(&mut v[..])),
                group,
                origin,
            }),
            (Moments::F32(s), param, grad) => {
                let param = match param {
                    Param::F32(p) => StoredMut::Native(p),
                    Param::Bf16(p) => StoredMut::Bf16(p),
                    Param::F16(p) => StoredMut::F16(p),
                    Param::F64(_) => StoredMut::Native(&mut []),
                };
                let grad = match grad {
                    Grad::F32(g) => Stored::Native(g),
                    Grad::Bf16(g) => Stored::Bf16(g),
                    Grad::F16(g) => Stored::F16(g),
                    Grad::F64(_) => Stored::Native(&[]),
                };
                f32s.push(Record {
                    param,
                    grad,
                    master_param: master,
                    state: s.as_mut().map(|_, v| StoredMut::Native(&mut v[..])),
                    group,
                    origin,
                })
            }
            // The dtypes were checked before locking; a mismatch here fails
            // check_mixed's length check (an empty buffer) rather than panic.
            (Moments::F64(s), _, _) => f64s.push(Record {
                param: StoredMut::Native(&mut []),
                grad: Stored::Native(&[]),
                master_param: None,
                state: s.as_mut().map(|_, v| StoredMut::Native(&mut v[..])),
                group,
                origin,
            }),
        }
    }
    let f32s = check_mixed(f32s, groups)?;
    let f64s = check_mixed(f64s, groups)?;
    f32s.step();
    f64s.step();
    Ok(())
}
