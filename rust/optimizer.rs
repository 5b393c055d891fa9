//! An owning Adam optimizer for Rust programs: it keeps the moments itself.

use crate::config::AdamConfig;
use crate::element::Float;
use crate::error::{ConfigError, StepError};
use crate::multi::step_tensors;
use crate::scalars::{Count, TensorSteps};
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
    /// Calls of [`Adam::step`] / [`Adam::step_some`] that stepped.
    step: u64,
    /// Each tensor's own count (a tensor without a gradient in a step stays).
    counts: Vec<Count>,
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
            counts: vec![Count::default(); sizes.len()],
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

    /// The number of steps each tensor has taken: [`Adam::step_count`] for
    /// all of them unless [`Adam::step_some`] left some out. Its bias corrections
    /// are those of its own count.
    pub fn tensor_step_counts(&self) -> impl ExactSizeIterator<Item = u64> + '_ {
        self.counts.iter().map(|c| c.steps)
    }

    /// The moments, one entry per tensor in the order given to [`Adam::new`].
    pub fn state(&self) -> &[AdamState<T>] {
        &self.state
    }

    /// One step: `params[i] -= ...` in place, given `grads[i]` of the same length.
    /// On error nothing has been written.
    pub fn step(&mut self, params: &mut [&mut [T]], grads: &[&[T]]) -> Result<(), StepError> {
        let grads: Vec<Option<&[T]>> = grads.iter().map(|&g| Some(g)).collect();
        self.step_some(params, &grads)
    }

    /// One step of the tensors that have a gradient (`grads[i]` is `None`
    /// for one that has none: it is left as it is, and its step count does not
    /// advance, as `torch.optim` skips a param whose `.grad` is None). On error
    /// nothing has been written.
    pub fn step_some(
        &mut self,
        params: &mut [&mut [T]],
        grads: &[Option<&[T]>],
    ) -> Result<(), StepError> {
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
        let stepped = grads.iter().zip(&self.counts).filter(|(g, _)| g.is_some());
        let plan = TensorSteps::plan(
            std::slice::from_ref(&self.config),
            stepped.map(|(_, &c)| (0, c)),
        )
        .map_err(|(_, e)| e)?;
        let tensors = params
            .iter_mut()
            .zip(grads)
            .zip(self.state.iter_mut())
            .filter_map(|((param, grad), s)| Some((param, (*grad)?, s)))
            .zip(&plan.index)
            .map(|((param, grad, s), &index)| Tensor {
                param: &mut param[..],
                grad,
                master_param: None,
                state: s.as_mut().map(|_, v| &mut v[..]),
                group: index,
                origin: None,
            })
            .collect();
        step_tensors(tensors, &plan.scalars)?;
        let advanced = self
            .counts
            .iter_mut()
            .zip(grads)
            .filter(|(_, g)| g.is_some());
        for ((count, _), next) in advanced.zip(plan.next) {
            *count = next;
        }
        self.step = next;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A tensor left out of some steps ends where an optimizer of its own, stepped
    /// only on its steps, does: its bias corrections are those of its own count.
    #[test]
    fn a_tensor_without_a_grad_keeps_its_count_and_values() {
        for config in [AdamConfig::default(), AdamConfig::nadam()] {
            let mut a = vec![1.0f64, -2.0, 0.5];
            let mut b = vec![0.25f64, 3.0];
            let mut opt = Adam::<f64>::new(config, &[3, 2]).unwrap();
            let mut alone_a = a.clone();
            let mut alone_b = b.clone();
            let mut opt_a = Adam::<f64>::new(config, &[3]).unwrap();
            let mut opt_b = Adam::<f64>::new(config, &[2]).unwrap();
            for t in 0..12u32 {
                let ga: Vec<f64> = a.iter().map(|x| x * 0.5 + f64::from(t)).collect();
                let gb: Vec<f64> = b.iter().map(|x| x - 0.1 * f64::from(t)).collect();
                let b_steps = t % 3 == 0;
                let grads = [Some(&ga[..]), b_steps.then_some(&gb[..])];
                let before_b = b.clone();
                opt.step_some(&mut [&mut a, &mut b], &grads).unwrap();
                opt_a.step(&mut [&mut alone_a], &[&ga]).unwrap();
                if b_steps {
                    opt_b.step(&mut [&mut alone_b], &[&gb]).unwrap();
                } else {
                    assert_eq!(b, before_b);
                }
                assert_eq!(a, alone_a);
                assert_eq!(b, alone_b);
            }
            let counts: Vec<u64> = opt.tensor_step_counts().collect();
            assert_eq!(counts, [12, 4]);
            assert_eq!(opt.step_count(), 12);
            assert_eq!(opt.state()[1].exp_avg, opt_b.state()[0].exp_avg);
        }
    }
}
