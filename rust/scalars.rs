//! Per-step scalars, computed once per step on the host in f64.
//!
//! The kernels never call `pow`: the bias corrections and every derived
//! coefficient are computed here, then rounded once to the element type.

use crate::config::AdamConfig;
use crate::element::Float;
use crate::error::StepError;

/// What one step of one parameter group needs, in f64.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct StepScalars {
    /// `lr / (1 - beta1^t)`.
    pub step_size: f64,
    /// `1 / sqrt(1 - beta2^t)`.
    pub inv_bias_correction2_sqrt: f64,
    /// The weight of the gradient in the first moment's lerp, `1 - beta1`.
    pub one_minus_beta1: f64,
    pub beta2: f64,
    pub one_minus_beta2: f64,
    pub eps: f64,
    /// L2 coefficient added to the gradient (0 when the decay is decoupled).
    pub l2: f64,
    /// Decoupled decay factor `1 - lr * weight_decay` (1 otherwise).
    pub decay: f64,
    pub maximize: bool,
    pub amsgrad: bool,
}

impl StepScalars {
    /// The scalars of step `step` (the first update is step 1), after validating `config`.
    pub fn new(config: &AdamConfig, step: u64) -> Result<Self, StepError> {
        config.validate()?;
        if step == 0 {
            return Err(StepError::StepZero);
        }
        // u64 -> f64 is exact up to 2^53 steps; beyond that beta^t is 0 in f64 anyway.
        let t = step as f64;
        let bias_correction1 = 1.0 - config.beta1.powf(t);
        let bias_correction2 = 1.0 - config.beta2.powf(t);
        let decoupled = config.decoupled_weight_decay;
        Ok(StepScalars {
            step_size: config.lr / bias_correction1,
            inv_bias_correction2_sqrt: 1.0 / bias_correction2.sqrt(),
            one_minus_beta1: 1.0 - config.beta1,
            beta2: config.beta2,
            one_minus_beta2: 1.0 - config.beta2,
            eps: config.eps,
            l2: if decoupled { 0.0 } else { config.weight_decay },
            decay: if decoupled {
                1.0 - config.lr * config.weight_decay
            } else {
                1.0
            },
            maximize: config.maximize,
            amsgrad: config.amsgrad,
        })
    }

    /// Round to the element type once, for the kernel.
    pub(crate) fn coeffs<T: Float>(&self) -> Coeffs<T> {
        Coeffs {
            step_size: T::from_f64(self.step_size),
            inv_bias_correction2_sqrt: T::from_f64(self.inv_bias_correction2_sqrt),
            one_minus_beta1: T::from_f64(self.one_minus_beta1),
            beta2: T::from_f64(self.beta2),
            one_minus_beta2: T::from_f64(self.one_minus_beta2),
            eps: T::from_f64(self.eps),
            l2: T::from_f64(self.l2),
            decay: T::from_f64(self.decay),
            sign: T::from_f64(if self.maximize { -1.0 } else { 1.0 }),
            has_l2: self.l2 != 0.0,
            amsgrad: self.amsgrad,
        }
    }
}

/// [`StepScalars`] rounded to the element type: what the kernel reads.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Coeffs<T> {
    pub step_size: T,
    pub inv_bias_correction2_sqrt: T,
    pub one_minus_beta1: T,
    pub beta2: T,
    pub one_minus_beta2: T,
    pub eps: T,
    pub l2: T,
    pub decay: T,
    /// -1 to maximize (an exact multiplication), else 1.
    pub sign: T,
    pub has_l2: bool,
    pub amsgrad: bool,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bias_corrections_follow_algorithm_1() {
        let cfg = AdamConfig::default();
        for t in [1u64, 2, 10, 1000] {
            let s = StepScalars::new(&cfg, t).unwrap();
            let bc1 = 1.0 - 0.9f64.powi(t as i32);
            let bc2 = 1.0 - 0.999f64.powi(t as i32);
            assert!((s.step_size - 1e-3 / bc1).abs() <= 1e-15 * s.step_size);
            let want = 1.0 / bc2.sqrt();
            assert!((s.inv_bias_correction2_sqrt - want).abs() <= 1e-14 * want);
        }
    }

    #[test]
    fn step_zero_and_bad_config_are_errors() {
        assert_eq!(
            StepScalars::new(&AdamConfig::default(), 0),
            Err(StepError::StepZero)
        );
        let bad = AdamConfig {
            lr: -1.0,
            ..Default::default()
        };
        assert!(matches!(
            StepScalars::new(&bad, 1),
            Err(StepError::Config(_))
        ));
    }

    #[test]
    fn huge_step_counts_stay_finite() {
        let s = StepScalars::new(&AdamConfig::default(), u64::MAX).unwrap();
        assert_eq!(s.step_size, 1e-3);
        assert_eq!(s.inv_bias_correction2_sqrt, 1.0);
    }

    #[test]
    fn decoupled_decay_is_a_factor_not_a_gradient_term() {
        let s = StepScalars::new(&AdamConfig::adamw(), 1).unwrap();
        assert_eq!(s.l2, 0.0);
        assert_eq!(s.decay, 1.0 - 1e-3 * 1e-2);
        let l2 = AdamConfig {
            weight_decay: 0.5,
            ..Default::default()
        };
        let s = StepScalars::new(&l2, 1).unwrap();
        assert_eq!((s.l2, s.decay), (0.5, 1.0));
    }
}
