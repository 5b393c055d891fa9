//! Adam's hyperparameters and their validation.

use crate::error::ConfigError;

/// The options of one Adam parameter group, as `torch.optim.Adam` names them.
///
/// `eps` is added outside the root of the bias-corrected second moment
/// (Algorithm 1 of Kingma & Ba). With `decoupled_weight_decay` the decay is
/// AdamW's `param *= 1 - lr * weight_decay`; otherwise it is L2 regularisation
/// added to the gradient.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct AdamConfig {
    pub lr: f64,
    pub beta1: f64,
    pub beta2: f64,
    pub eps: f64,
    pub weight_decay: f64,
    pub decoupled_weight_decay: bool,
    pub amsgrad: bool,
    pub maximize: bool,
}

impl Default for AdamConfig {
    /// PyTorch's and the paper's defaults.
    fn default() -> Self {
        AdamConfig {
            lr: 1e-3,
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
            weight_decay: 0.0,
            decoupled_weight_decay: false,
            amsgrad: false,
            maximize: false,
        }
    }
}

impl AdamConfig {
    /// AdamW's defaults (`torch.optim.AdamW`): decoupled weight decay of 1e-2.
    pub fn adamw() -> Self {
        AdamConfig {
            weight_decay: 1e-2,
            decoupled_weight_decay: true,
            ..Self::default()
        }
    }

    /// Check every value; the error names the first bad one.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let bad = |name: &'static str, value: f64, rule: &'static str| {
            Err(ConfigError { name, value, rule })
        };
        // Written as negated ranges so that NaN fails every check.
        if !(self.lr.is_finite() && self.lr >= 0.0) {
            return bad("lr", self.lr, "a finite number >= 0");
        }
        if !(self.beta1 >= 0.0 && self.beta1 < 1.0) {
            return bad("betas[0]", self.beta1, "in [0, 1)");
        }
        if !(self.beta2 >= 0.0 && self.beta2 < 1.0) {
            return bad("betas[1]", self.beta2, "in [0, 1)");
        }
        if !(self.eps.is_finite() && self.eps >= 0.0) {
            return bad("eps", self.eps, "a finite number >= 0");
        }
        if !(self.weight_decay.is_finite() && self.weight_decay >= 0.0) {
            return bad("weight_decay", self.weight_decay, "a finite number >= 0");
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid() {
        assert!(AdamConfig::default().validate().is_ok());
        assert!(AdamConfig::adamw().validate().is_ok());
    }

    #[test]
    fn each_bad_value_is_named() {
        let cases: [(AdamConfig, &str); 8] = [
            (
                AdamConfig {
                    lr: -1.0,
                    ..Default::default()
                },
                "lr",
            ),
            (
                AdamConfig {
                    lr: f64::NAN,
                    ..Default::default()
                },
                "lr",
            ),
            (
                AdamConfig {
                    beta1: 1.0,
                    ..Default::default()
                },
                "betas[0]",
            ),
            (
                AdamConfig {
                    beta1: -0.1,
                    ..Default::default()
                },
                "betas[0]",
            ),
            (
                AdamConfig {
                    beta2: f64::NAN,
                    ..Default::default()
                },
                "betas[1]",
            ),
            (
                AdamConfig {
                    eps: -1e-8,
                    ..Default::default()
                },
                "eps",
            ),
            (
                AdamConfig {
                    weight_decay: -0.1,
                    ..Default::default()
                },
                "weight_decay",
            ),
            (
                AdamConfig {
                    weight_decay: f64::INFINITY,
                    ..Default::default()
                },
                "weight_decay",
            ),
        ];
        for (cfg, name) in cases {
            let err = cfg.validate().unwrap_err();
            assert_eq!(err.name, name, "{cfg:?}");
            assert!(err.to_string().contains(name));
        }
    }
}
