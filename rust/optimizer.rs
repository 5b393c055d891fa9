//! An owning Adam optimizer for Rust programs: it keeps the moments itself.

use crate::config::AdamConfig;
use crate::element::Float;
use crate::error::{ConfigError, StepError};
use crate::multi::step_tensors;
use crate::scalars::StepScalars;
use crate::tensor::{State, Tensor};

/// The moments of one tensor (`max_exp_avg_sq` present when AMSGrad is on,
/// `velocity` when momentum or Nesterov is).
pub type AdamState<T> = State<Vec<T>>;

/// The zeroed moments of a tensor of `n` elements, with the buffers `config` needs.
pub(crate) fn zeroed<T: Float>(config: &AdamConfig, n: usize) -> AdamState<T> {
    State {
        exp_avg: vec![T::ZERO; n],
        exp_avg_sq: vec![T::ZERO; n],
        max_exp_avg_sq: config.amsgrad.then(|| vec![T::ZERO; n]),
        velocity: config.uses_velocity().then(|| vec![T::ZERO; n]),
    }
}

/// Refuse a change of what decides the state's buffers (AMSGrad, momentum on
/// or off) or their meaning (AdaMax's infinity norm) after construction.
pub(crate) fn check_fixed(ours: &AdamConfig, theirs: &AdamConfig) -> Result<(), ConfigError> {
    let fixed = |name, ours: bool, theirs: bool| match ours == theirs {
        true => Ok(()),
        false => Err(ConfigError {
            name,
            value: theirs as u8 as f64,
            rule: "unchanged after construction",
        }),
    };
    fixed("amsgrad", ours.amsgrad, theirs.amsgrad)?;
    fixed("momentum", ours.uses_velocity(), theirs.uses_velocity())?;
    let adamax = |c: &AdamConfig| c.algorithm == crate::Algorithm::Adamax;
    fixed("algorithm", adamax(ours), adamax(theirs))
}

/// Adam over a fixed list of tensors, one parameter group.
///
/// ```
/// use radam::{Adam, AdamConfig};
/// let mut w = vec![1.0f32, -2.0, 3.0];
/// let mut opt = Adam::<f32>::new(AdamConfig { lr: 0.1, ..Default::default() }, &[w.len()]).unwrap();
/// for _ in 0..100 {
///     let grad: Vec<f32> = w.iter().map(|x| 2.0 * x).collect(); // d/dw of |w|^2
///     opt.step(&mut [&mut w[..]], &[&grad[..]]).unwrap();
/// }
/// assert!(w.iter().all(|x| x.abs() < 0.5));
/// ```
#[derive(Clone, Debug)]
pub struct Adam<T> {
    config: AdamConfig,
    step: u64,
    state: Vec<AdamState<T>>,
}

impl<T: Float> Adam<T> {
    /// An optimizer for tensors of the given sizes, with zeroed moments.
    pub fn new(config: AdamConfig, sizes: &[usize]) -> Result<Self, ConfigError> {
        config.validate()?;
        let state = sizes.iter().map(|&n| zeroed(&config, n)).collect();
        Ok(Adam {
            config,
            step: 0,
            state,
        })
    }

    /// The options it steps with.
    pub fn config(&self) -> &AdamConfig {
        &self.config
    }

    /// Change options between steps (a learning-rate schedule, say). The new
    /// values are validated here; what decides the state's buffers (AMSGrad,
    /// momentum on or off, the algorithm) is fixed at construction.
    pub fn set_config(&mut self, config: AdamConfig) -> Result<(), ConfigError> {
        config.validate()?;
        check_fixed(&self.config, &config)?;
        self.config = config;
        Ok(())
    }

    /// The number of steps taken.
    pub fn step_count(&self) -> u64 {
        self.step
    }

    /// The moments, one entry per tensor in the order given to [`Adam::new`].
    pub fn state(&self) -> &[AdamState<T>] {
        &self.state
    }

    /// One step: `params[i] -= ...` in place, given `grads[i]` of the same length.
    /// On error nothing has been written.
    pub fn step(&mut self, params: &mut [&mut [T]], grads: &[&[T]]) -> Result<(), StepError> {
        for (what, got) in [("params", params.len()), ("grads", grads.len())] {
            if got != self.state.len() {
                return Err(StepError::CountMismatch {
                    what,
                    expected: self.state.len(),
                    got,
                });
            }
        }
        let next = self.step.checked_add(1).ok_or(StepError::StepOverflow)?;
        let scalars = [StepScalars::new(&self.config, next)?];
        let tensors = params
            .iter_mut()
            .zip(grads)
            .zip(self.state.iter_mut())
            .map(|((param, grad), s)| Tensor {
                param: &mut param[..],
                grad: &grad[..],
                master_param: None,
                state: s.as_mut().map(|_, v| &mut v[..]),
                group: 0,
                origin: None,
            })
            .collect();
        step_tensors(tensors, &scalars)?;
        self.step = next;
        Ok(())
    }
}
