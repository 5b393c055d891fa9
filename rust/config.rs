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

/// An option whose value is one of a few names (as the Python API spells them).
pub trait Choice: Copy + PartialEq + 'static {
    /// Every value, in the order of its name list.
    const ALL: &'static [Self];

    /// The value's name.
    fn name(self) -> &'static str;

    /// The value of that name.
    fn from_name(name: &str) -> Option<Self> {
        Self::ALL.iter().copied().find(|c| c.name() == name)
    }
}

impl Choice for Algorithm {
    const ALL: &'static [Self] = &[
        Algorithm::Adam,
        Algorithm::Adamax,
        Algorithm::NAdam,
        Algorithm::RAdam,
    ];

    fn name(self) -> &'static str {
        match self {
            Algorithm::Adam => "adam",
            Algorithm::Adamax => "adamax",
            Algorithm::NAdam => "nadam",
            Algorithm::RAdam => "radam",
        }
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

impl Choice for BiasCorrection {
    const ALL: &'static [Self] = &[BiasCorrection::Adam, BiasCorrection::Downhill040];

    fn name(self) -> &'static str {
        match self {
            BiasCorrection::Adam => "adam",
            BiasCorrection::Downhill040 => "downhill-0.4.0",
        }
    }
}

/// Where an [`AdamConfig`] is read from, field by field, by name (the Python
/// bindings read the attributes of a group's validated options).
pub trait Fields {
    /// What a failed read is.
    type Error;
    /// The number named `name`.
    fn real(&mut self, name: &'static str) -> Result<f64, Self::Error>;
    /// The flag named `name`.
    fn flag(&mut self, name: &'static str) -> Result<bool, Self::Error>;
    /// The whole number named `name`, from 0 to 2^64 - 1.
    fn integer(&mut self, name: &'static str) -> Result<u64, Self::Error>;
    /// The name of the choice named `name`.
    fn choice(&mut self, name: &'static str) -> Result<String, Self::Error>;
    /// The error for `value`, which no value of choice `name` is called.
    fn unknown(&mut self, name: &'static str, value: String) -> Self::Error;
}

/// A field's type, read from [`Fields`] by its kind.
trait Field: Sized {
    fn read<F: Fields>(fields: &mut F, name: &'static str) -> Result<Self, F::Error>;
}

impl Field for f64 {
    fn read<F: Fields>(fields: &mut F, name: &'static str) -> Result<Self, F::Error> {
        fields.real(name)
    }
}

impl Field for bool {
    fn read<F: Fields>(fields: &mut F, name: &'static str) -> Result<Self, F::Error> {
        fields.flag(name)
    }
}

impl Field for u64 {
    fn read<F: Fields>(fields: &mut F, name: &'static str) -> Result<Self, F::Error> {
        fields.integer(name)
    }
}

fn read_choice<C: Choice, F: Fields>(fields: &mut F, name: &'static str) -> Result<C, F::Error> {
    let value = fields.choice(name)?;
    C::from_name(&value).ok_or_else(|| fields.unknown(name, value))
}

impl Field for Algorithm {
    fn read<F: Fields>(fields: &mut F, name: &'static str) -> Result<Self, F::Error> {
        read_choice(fields, name)
    }
}

impl Field for BiasCorrection {
    fn read<F: Fields>(fields: &mut F, name: &'static str) -> Result<Self, F::Error> {
        read_choice(fields, name)
    }
}

/// The range of `grad_scale`: float32's normal numbers whose inverse is one too.
const GRAD_SCALE_MIN: f64 = 1.0 / (1u128 << 126) as f64;
const GRAD_SCALE_MAX: f64 = (1u128 << 126) as f64;

/// Declares [`AdamConfig`] from one list of its fields with their defaults,
/// with `Default` and the reading of every field by name.
macro_rules! adam_config {
    (
        $(#[$meta:meta])*
        pub struct AdamConfig {
            $($(#[doc = $doc:literal])* $field:ident: $ty:ty = $default:expr,)+
        }
    ) => {
        $(#[$meta])*
        pub struct AdamConfig {
            $($(#[doc = $doc])* pub $field: $ty,)+
        }

        impl Default for AdamConfig {
            /// PyTorch's and the paper's defaults.
            fn default() -> Self {
                AdamConfig { $($field: $default,)+ }
            }
        }

        impl AdamConfig {
            /// The fields' names, in order.
            pub const FIELDS: &'static [&'static str] = &[$(stringify!($field)),+];

            /// A config read from `fields`, each field by its name. The values are
            /// not checked: see [`AdamConfig::validate`].
            pub fn from_fields<F: Fields>(fields: &mut F) -> Result<Self, F::Error> {
                Ok(AdamConfig { $($field: Field::read(fields, stringify!($field))?,)+ })
            }
        }
    };
}

adam_config! {
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
        lr: f64 = 1e-3,
        /// Decay of the first moment, in [0, 1).
        beta1: f64 = 0.9,
        /// Decay of the second moment (AdaMax: of the infinity norm), in [0, 1).
        beta2: f64 = 0.999,
        /// Added to the root of the second moment (finite, >= 0).
        eps: f64 = 1e-8,
        /// L2 coefficient, or AdamW's decay with `decoupled_weight_decay` (finite, >= 0).
        weight_decay: f64 = 0.0,
        /// AdamW: `param *= 1 - lr * weight_decay` before the update instead of L2.
        decoupled_weight_decay: bool = false,
        /// Divide by the running maximum of the second moment (AMSGrad).
        amsgrad: bool = false,
        /// Ascend the objective instead of descending it.
        maximize: bool = false,
        /// The paper's efficient form: step `lr * sqrt(1 - beta2^t) / (1 - beta1^t)`,
        /// `eps` added to the uncorrected `sqrt(v)` (Keras, PuzzleLib).
        efficient_form: bool = false,
        /// lambda: the first moment uses `beta1 * lambda^(t-1)`; 1 turns it off.
        beta1_decay: f64 = 1.0,
        /// downhill's velocity on top of the Adam step (0 turns it off).
        momentum: f64 = 0.0,
        /// Nesterov's form of that velocity.
        nesterov: bool = false,
        /// Clip each gradient element to +-this before the moments (0 turns it off).
        max_gradient_elem: f64 = 0.0,
        /// Rescale each tensor's gradient to at most this L2 norm (0 turns it off;
        /// element clipping wins when both are set).
        max_gradient_norm: f64 = 0.0,
        /// How the moments are corrected for their zero start.
        bias_correction: BiasCorrection = BiasCorrection::Adam,
        /// The update rule: Adam, AdaMax, NAdam or RAdam.
        algorithm: Algorithm = Algorithm::Adam,
        /// NAdam's psi: `mu_t = beta1 * (1 - 0.5 * 0.96^(t * psi))`.
        momentum_decay: f64 = 4e-3,
        /// Gradients arrive multiplied by this (loss scaling); the kernel divides it out.
        grad_scale: f64 = 1.0,
        /// Store each updated 16-bit param rounded up or down at random, with
        /// probability proportional to its distance (unbiased), instead of to
        /// nearest. Only for bfloat16 and float16 params without a master copy.
        stochastic_rounding: bool = false,
        /// The seed of that rounding's random bits, a counter-based hash of
        /// (seed, step, tensor position, element index).
        rounding_seed: u64 = 0,
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
        // Each range holds no NaN, so NaN fails every check.
        const FINITE: &str = "a finite number >= 0";
        let finite = |x: f64| x.is_finite() && x >= 0.0;
        let unit = |x: f64| (0.0..1.0).contains(&x);
        let ranges = [
            ("lr", self.lr, finite(self.lr), FINITE),
            ("betas[0]", self.beta1, unit(self.beta1), "in [0, 1)"),
            ("betas[1]", self.beta2, unit(self.beta2), "in [0, 1)"),
            ("eps", self.eps, finite(self.eps), FINITE),
            (
                "weight_decay",
                self.weight_decay,
                finite(self.weight_decay),
                FINITE,
            ),
            (
                "beta1_decay",
                self.beta1_decay,
                self.beta1_decay > 0.0 && self.beta1_decay <= 1.0,
                "in (0, 1]",
            ),
            ("momentum", self.momentum, unit(self.momentum), "in [0, 1)"),
            (
                "max_gradient_elem",
                self.max_gradient_elem,
                finite(self.max_gradient_elem),
                FINITE,
            ),
            (
                "max_gradient_norm",
                self.max_gradient_norm,
                finite(self.max_gradient_norm),
                FINITE,
            ),
            (
                "momentum_decay",
                self.momentum_decay,
                finite(self.momentum_decay),
                FINITE,
            ),
            // The kernel multiplies float32 gradients by 1 / grad_scale: both must
            // be normal float32 numbers, or the params turn to Inf or NaN.
            (
                "grad_scale",
                self.grad_scale,
                (GRAD_SCALE_MIN..=GRAD_SCALE_MAX).contains(&self.grad_scale),
                "in [2^-126, 2^126], so that it and its inverse are normal float32 numbers",
            ),
        ];
        for (name, value, ok, rule) in ranges {
            if !ok {
                return bad(name, value, rule);
            }
        }
        let legacy = self.bias_correction == BiasCorrection::Downhill040;
        if self.efficient_form && legacy {
            return bad(
                "efficient_form",
                1.0,
                "False with bias_correction='downhill-0.4.0'",
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
        for &a in Algorithm::ALL {
            assert_eq!(Algorithm::from_name(a.name()), Some(a));
        }
        for &b in BiasCorrection::ALL {
            assert_eq!(BiasCorrection::from_name(b.name()), Some(b));
        }
        assert_eq!(Algorithm::from_name("sgd"), None);
        assert_eq!(BiasCorrection::from_name("downhill"), None);
    }

    /// Fields read from the `Debug` text of a config (`name: value` pairs, a
    /// choice by its variant's name), listing the names asked for.
    struct FromDebug(Vec<(String, String)>, Vec<&'static str>);

    impl FromDebug {
        fn new(cfg: &AdamConfig) -> Self {
            let text = format!("{cfg:?}");
            let inner = &text[text.find('{').unwrap() + 1..text.rfind('}').unwrap()];
            let pairs = inner.split(',').map(|pair| {
                let (name, value) = pair.split_once(':').unwrap();
                (name.trim().to_string(), value.trim().to_string())
            });
            FromDebug(pairs.collect(), Vec::new())
        }

        fn get(&mut self, name: &'static str) -> Result<String, String> {
            self.1.push(name);
            let found = self.0.iter().find(|(n, _)| n == name);
            found
                .map(|(_, v)| v.clone())
                .ok_or_else(|| name.to_string())
        }
    }

    fn named<C: Choice + std::fmt::Debug>(debug: &str) -> String {
        let found = C::ALL.iter().find(|c| format!("{c:?}") == debug);
        found.map_or_else(|| debug.to_string(), |c| c.name().to_string())
    }

    impl Fields for FromDebug {
        type Error = String;
        fn real(&mut self, name: &'static str) -> Result<f64, String> {
            self.get(name)?.parse().map_err(|_| name.to_string())
        }
        fn flag(&mut self, name: &'static str) -> Result<bool, String> {
            self.get(name)?.parse().map_err(|_| name.to_string())
        }
        fn integer(&mut self, name: &'static str) -> Result<u64, String> {
            self.get(name)?.parse().map_err(|_| name.to_string())
        }
        fn choice(&mut self, name: &'static str) -> Result<String, String> {
            let debug = self.get(name)?;
            Ok(match name {
                "algorithm" => named::<Algorithm>(&debug),
                _ => named::<BiasCorrection>(&debug),
            })
        }
        fn unknown(&mut self, name: &'static str, value: String) -> String {
            format!("{name}={value}")
        }
    }

    #[test]
    fn every_field_is_read_by_its_name() {
        let cfg = AdamConfig {
            lr: 0.5,
            nesterov: true,
            bias_correction: BiasCorrection::Downhill040,
            momentum_decay: 0.25,
            stochastic_rounding: true,
            rounding_seed: u64::MAX - 3,
            ..AdamConfig::nadam()
        };
        let mut fields = FromDebug::new(&cfg);
        assert_eq!(AdamConfig::from_fields(&mut fields), Ok(cfg));
        assert_eq!(fields.1, AdamConfig::FIELDS);
        // An unknown choice is the reader's error.
        let mut fields = FromDebug::new(&cfg);
        fields
            .0
            .iter_mut()
            .find(|(n, _)| n == "algorithm")
            .unwrap()
            .1 = "RmsProp".into();
        assert_eq!(
            AdamConfig::from_fields(&mut fields),
            Err("algorithm=RmsProp".into())
        );
    }
}
