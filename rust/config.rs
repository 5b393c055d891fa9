//! Adam's hyperparameters and their validation.

use crate::error::ConfigError;

/// Which update rule a group follows.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Algorithm {
    /// Adam (Kingma & Ba, Algorithm 1, or its efficient form).
    #[default]
    Adam,
    /// AdaMax (Algorithm 2): the infinity norm `u = max(beta2 * u, |g| + eps)` replaces
    /// sqrt(v); where `u == 0` the update is 0.
    Adamax,
    /// NAdam (Dozat), as `torch.optim.NAdam`: Nesterov momentum with the
    /// `momentum_decay` schedule of the first moment's coefficient.
    NAdam,
    /// RAdam (Liu et al.), as `torch.optim.RAdam`: the adaptive step is
    /// rectified, and while the rectification is undefined (rho_t <= 5) the
    /// step is the un-adapted `lr * m / (1 - beta1^t)`.
    RAdam,
}

impl Algorithm {
    /// Every rule, in the order of its name list.
    pub const ALL: [Algorithm; 4] = [
        Algorithm::Adam,
        Algorithm::Adamax,
        Algorithm::NAdam,
        Algorithm::RAdam,
    ];

    /// The rule's name as the Python API spells it (`"adam"`, `"adamax"`, `"nadam"`, `"radam"`).
    pub const fn name(self) -> &'static str {
        match self {
            Algorithm::Adam => "adam",
            Algorithm::Adamax => "adamax",
            Algorithm::NAdam => "nadam",
            Algorithm::RAdam => "radam",
        }
    }

    /// The rule of that name.
    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|a| a.name() == name)
    }
}

/// How the moments are corrected for their zero start.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum BiasCorrection {
    /// The paper's `1 - beta^t` corrections.
    #[default]
    Adam,
    /// downhill 0.4.0 (the release on PyPI): a constant rescale,
    /// `m / (1 - beta1_t)` and `sqrt(v / (1 - beta2))`, with no power of t in the second.
    Downhill040,
}

impl BiasCorrection {
    /// Every correction, in the order of its name list.
    pub const ALL: [BiasCorrection; 2] = [BiasCorrection::Adam, BiasCorrection::Downhill040];

    /// The correction's name as the Python API spells it (`"adam"`, `"downhill-0.4.0"`).
    pub const fn name(self) -> &'static str {
        match self {
            BiasCorrection::Adam => "adam",
            BiasCorrection::Downhill040 => "downhill-0.4.0",
        }
    }

    /// The correction of that name.
    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|b| b.name() == name)
    }
}

/// The range of `grad_scale`: float32's normal numbers whose inverse is one too.
const GRAD_SCALE_MIN: f64 = 1.0 / (1u128 << 126) as f64;
const GRAD_SCALE_MAX: f64 = (1u128 << 126) as f64;

/// The options of one parameter group, as `torch.optim.Adam` (and, for the
/// seed systems' extras, downhill) name them.
///
/// `eps` is added outside the root of the bias-corrected second moment
/// (Algorithm 1 of Kingma & Ba), or of the uncorrected one with
/// `efficient_form`. With `decoupled_weight_decay` the decay is AdamW's
/// `param *= 1 - lr * weight_decay`; otherwise it is L2 regularisation added
/// to the gradient.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct AdamConfig {
    /// The step size alpha (finite, >= 0).
    pub lr: f64,
    /// Decay of the first moment, in [0, 1).
    pub beta1: f64,
    /// Decay of the second moment (AdaMax: of the infinity norm), in [0, 1).
    pub beta2: f64,
    /// Added to the root of the second moment (finite, >= 0).
    pub eps: f64,
    /// L2 coefficient, or AdamW's decay with `decoupled_weight_decay` (finite, >= 0).
    pub weight_decay: f64,
    /// AdamW: `param *= 1 - lr * weight_decay` before the update instead of L2.
    pub decoupled_weight_decay: bool,
    /// Divide by the running maximum of the second moment (AMSGrad).
    pub amsgrad: bool,
    /// Ascend the objective instead of descending it.
    pub maximize: bool,
    /// The paper's efficient form: step `lr * sqrt(1 - beta2^t) / (1 - beta1^t)`,
    /// `eps` added to the uncorrected `sqrt(v)` (Keras, PuzzleLib).
    pub efficient_form: bool,
    /// lambda: the first moment uses `beta1 * lambda^(t-1)`; 1 turns it off.
    pub beta1_decay: f64,
    /// downhill's velocity on top of the Adam step (0 turns it off).
    pub momentum: f64,
    /// Nesterov's form of that velocity.
    pub nesterov: bool,
    /// Clip each gradient element to +-this before the moments (0 turns it off).
    pub max_gradient_elem: f64,
    /// Rescale each tensor's gradient to at most this L2 norm (0 turns it off;
    /// element clipping wins when both are set).
    pub max_gradient_norm: f64,
    /// How the moments are corrected for their zero start.
    pub bias_correction: BiasCorrection,
    /// The update rule: Adam, AdaMax, NAdam or RAdam.
    pub algorithm: Algorithm,
    /// NAdam's psi: `mu_t = beta1 * (1 - 0.5 * 0.96^(t * psi))`.
    pub momentum_decay: f64,
    /// Gradients arrive multiplied by this (loss scaling); the kernel divides it out.
    pub grad_scale: f64,
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
            efficient_form: false,
            beta1_decay: 1.0,
            momentum: 0.0,
            nesterov: false,
            max_gradient_elem: 0.0,
            max_gradient_norm: 0.0,
            bias_correction: BiasCorrection::Adam,
            algorithm: Algorithm::Adam,
            momentum_decay: 4e-3,
            grad_scale: 1.0,
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

    /// AdaMax's defaults, as `torch.optim.Adamax`'s (the paper's Algorithm 2 with
    /// lr 2e-3 and eps 1e-8; `eps: 0.0` is the paper's own form).
    pub fn adamax() -> Self {
        AdamConfig {
            lr: 2e-3,
            algorithm: Algorithm::Adamax,
            ..Self::default()
        }
    }

    /// NAdam's defaults (`torch.optim.NAdam`: lr 2e-3, momentum_decay 4e-3).
    pub fn nadam() -> Self {
        AdamConfig {
            lr: 2e-3,
            algorithm: Algorithm::NAdam,
            ..Self::default()
        }
    }

    /// RAdam's defaults (`torch.optim.RAdam`).
    pub fn radam() -> Self {
        AdamConfig {
            algorithm: Algorithm::RAdam,
            ..Self::default()
        }
    }

    /// Whether the state needs a velocity buffer.
    pub fn uses_velocity(&self) -> bool {
        self.momentum != 0.0 || self.nesterov
    }

    /// Check every value; the error names the first bad one.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let bad = |name: &'static str, value: f64, rule: &'static str| {
            Err(ConfigError { name, value, rule })
        };
        let flag = |b: bool| b as u8 as f64;
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
        if !(self.beta1_decay > 0.0 && self.beta1_decay <= 1.0) {
            return bad("beta1_decay", self.beta1_decay, "in (0, 1]");
        }
        if !(self.momentum >= 0.0 && self.momentum < 1.0) {
            return bad("momentum", self.momentum, "in [0, 1)");
        }
        if !(self.max_gradient_elem.is_finite() && self.max_gradient_elem >= 0.0) {
            return bad(
                "max_gradient_elem",
                self.max_gradient_elem,
                "a finite number >= 0",
            );
        }
        if !(self.max_gradient_norm.is_finite() && self.max_gradient_norm >= 0.0) {
            return bad(
                "max_gradient_norm",
                self.max_gradient_norm,
                "a finite number >= 0",
            );
        }
        let legacy = self.bias_correction == BiasCorrection::Downhill040;
        if self.efficient_form && legacy {
            return bad(
                "efficient_form",
                1.0,
                "False with bias_correction='downhill-0.4.0'",
            );
        }
        if !(self.momentum_decay.is_finite() && self.momentum_decay >= 0.0) {
            return bad(
                "momentum_decay",
                self.momentum_decay,
                "a finite number >= 0",
            );
        }
        // The kernel multiplies float32 gradients by 1 / grad_scale: both must
        // be normal float32 numbers, or the params turn to Inf or NaN.
        if !(self.grad_scale >= GRAD_SCALE_MIN && self.grad_scale <= GRAD_SCALE_MAX) {
            return bad(
                "grad_scale",
                self.grad_scale,
                "in [2^-126, 2^126], so that it and its inverse are normal float32 numbers",
            );
        }
        if self.algorithm != Algorithm::Adam {
            if self.amsgrad {
                return bad("amsgrad", flag(true), "False except for Adam");
            }
            if self.efficient_form {
                return bad("efficient_form", flag(true), "False except for Adam");
            }
            if legacy {
                return bad("bias_correction", 1.0, "'adam' except for Adam");
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grad_scale_range_ends_are_valid() {
        for grad_scale in [GRAD_SCALE_MIN, GRAD_SCALE_MAX, 65536.0, 1.0 / 1024.0] {
            let cfg = AdamConfig {
                grad_scale,
                ..Default::default()
            };
            assert!(cfg.validate().is_ok(), "{grad_scale}");
            let inverse = (1.0 / grad_scale) as f32;
            assert!(inverse.is_normal() && (grad_scale as f32).is_normal());
        }
    }

    #[test]
    fn defaults_are_valid() {
        assert!(AdamConfig::default().validate().is_ok());
        assert!(AdamConfig::adamw().validate().is_ok());
    }

    #[test]
    fn each_bad_value_is_named() {
        type Base = fn() -> AdamConfig;
        type Edit = fn(&mut AdamConfig);
        let plain = AdamConfig::default;
        let cases: [(Base, Edit, &str); 19] = [
            (plain, |c| c.lr = -1.0, "lr"),
            (plain, |c| c.lr = f64::NAN, "lr"),
            (plain, |c| c.beta1 = 1.0, "betas[0]"),
            (plain, |c| c.beta1 = -0.1, "betas[0]"),
            (plain, |c| c.beta2 = f64::NAN, "betas[1]"),
            (plain, |c| c.eps = -1e-8, "eps"),
            (plain, |c| c.weight_decay = -0.1, "weight_decay"),
            (plain, |c| c.weight_decay = f64::INFINITY, "weight_decay"),
            (plain, |c| c.beta1_decay = 0.0, "beta1_decay"),
            (plain, |c| c.beta1_decay = 1.5, "beta1_decay"),
            (plain, |c| c.momentum = 1.0, "momentum"),
            (plain, |c| c.max_gradient_elem = -1.0, "max_gradient_elem"),
            (
                plain,
                |c| c.max_gradient_norm = f64::NAN,
                "max_gradient_norm",
            ),
            (AdamConfig::adamax, |c| c.amsgrad = true, "amsgrad"),
            (plain, |c| c.grad_scale = 0.0, "grad_scale"),
            (plain, |c| c.grad_scale = 1e-39, "grad_scale"),
            (plain, |c| c.grad_scale = 1e39, "grad_scale"),
            (plain, |c| c.grad_scale = f64::NAN, "grad_scale"),
            (
                AdamConfig::radam,
                |c| c.efficient_form = true,
                "efficient_form",
            ),
        ];
        for (base, edit, name) in cases {
            let mut cfg = base();
            edit(&mut cfg);
            let err = cfg.validate().unwrap_err();
            assert_eq!(err.name, name, "{cfg:?}");
            assert!(err.to_string().contains(name));
        }
    }

    #[test]
    fn names_round_trip() {
        for a in Algorithm::ALL {
            assert_eq!(Algorithm::from_name(a.name()), Some(a));
        }
        for b in BiasCorrection::ALL {
            assert_eq!(BiasCorrection::from_name(b.name()), Some(b));
        }
        assert_eq!(Algorithm::from_name("sgd"), None);
        assert_eq!(BiasCorrection::from_name("downhill"), None);
    }
}
