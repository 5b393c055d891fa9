//! What the GPU kernel (`shaders/adam.wgsl`) reads for one step of one
//! parameter group: the rows of its `Step` uniform, field for field in the
//! struct's order, and the override constants that pick its variant. Both
//! come from the very [`Coeffs`] and flags the CPU kernel gets, so the host
//! that drives the GPU computes no formula of its own. So do the keys of
//! stochastic rounding, from the CPU's hash.

use crate::kernel::{flags, Coeffs, COEFFS};
use crate::quant::StochasticKey;
use crate::scalars::StepScalars;

/// The WGSL source of the GPU kernel (`shaders/adam.wgsl`), whose `Step` rows
/// this module writes. Its entry points are `adam_step` and `adam_step_q8`.
pub const ADAM_WGSL: &str = include_str!("../shaders/adam.wgsl");

/// The tests' and the benchmark's entry points (`shaders/probes.wgsl`: a copy
/// kernel, the 16-bit conversions, stochastic rounding and the 8-bit reciprocal
/// alone), compiled appended to [`ADAM_WGSL`], whose functions they call.
pub const PROBES_WGSL: &str = include_str!("../shaders/probes.wgsl");

/// The fields of the WGSL `Step` struct after the coefficients: the
/// dispatch's element range `lo..hi`; with stochastic rounding, the key of
/// its tensor and the index in that tensor of element `lo`; a pad to 16 bytes.
const DISPATCH_FIELDS: [&str; 7] = [
    "lo",
    "hi",
    "round_key",
    "round_first",
    "pad0",
    "pad1",
    "pad2",
];

/// Words in one row of the WGSL `Step` struct: the coefficients, then `lo`, `hi`,
/// `round_key`, `round_first` and three pad words.
pub const STEP_WORDS: usize = COEFFS + DISPATCH_FIELDS.len();

/// The fields of the WGSL `Step` struct, in order.
pub const STEP_FIELDS: [&str; STEP_WORDS] = {
    let mut fields = [""; STEP_WORDS];
    let mut i = 0;
    while i < STEP_WORDS {
        fields[i] = if i < COEFFS {
            Coeffs::<f32>::NAMES[i]
        } else {
            DISPATCH_FIELDS[i - COEFFS]
        };
        i += 1;
    }
    fields
};

/// The override constants of the WGSL kernel that one step's scalars set, by
/// their names in the shader (the others, `STATE`, `PARAM` and
/// `WORKGROUP_SIZE`, describe the buffers, not the step).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Pipeline {
    /// `AMSGRAD`: the running max of v in the denominator.
    pub amsgrad: bool,
    /// `MOMENTUM`: the velocity on top of the step.
    pub momentum: bool,
    /// `L2`: weight decay added to the gradient.
    pub l2: bool,
    /// `CLIP`: gradients clamped element-wise.
    pub clip: bool,
    /// `RULE`: the update rule, numbered as the shader's `RULE_*` constants.
    pub rule: u32,
    /// `STOCHASTIC`: 16-bit params rounded stochastically.
    pub stochastic: bool,
}

impl Pipeline {
    /// The constants by their names in the shader (flags as 0 or 1).
    pub fn overrides(&self) -> [(&'static str, u32); 6] {
        [
            ("AMSGRAD", self.amsgrad as u32),
            ("MOMENTUM", self.momentum as u32),
            ("L2", self.l2 as u32),
            ("CLIP", self.clip as u32),
            ("RULE", self.rule),
            ("STOCHASTIC", self.stochastic as u32),
        ]
    }
}

/// One step of one group on the GPU.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct GpuStep {
    scalars: StepScalars,
    coeffs: Coeffs<f32>,
}

impl GpuStep {
    /// The GPU's view of a group's step scalars.
    pub fn new(scalars: &StepScalars) -> Self {
        GpuStep {
            scalars: *scalars,
            coeffs: scalars.coeffs::<f32>(1.0),
        }
    }

    /// The row's coefficients (the fields before `lo`), rounded to f32 as the
    /// CPU kernel's, for a tensor that is not clipped by norm.
    pub fn row(&self) -> [f32; COEFFS] {
        self.coeffs.values()
    }

    /// Whether each tensor's gradient norm is measured: then each tensor gets
    /// its own row, from [`GpuStep::tensor_row`].
    pub fn clips_norm(&self) -> bool {
        self.scalars.clips_norm()
    }

    /// The row of a tensor whose raw (loss-scaled) gradient has L2 norm
    /// `raw_norm`, as the CPU step measures it.
    pub fn tensor_row(&self, raw_norm: f64) -> [f32; COEFFS] {
        let scale = self.scalars.norm_scale(raw_norm);
        self.scalars.coeffs::<f32>(scale).values()
    }

    /// The override constants of this step's pipeline.
    pub fn pipeline(&self) -> Pipeline {
        let on = |flag: u32| self.coeffs.variant & flag != 0;
        Pipeline {
            amsgrad: on(flags::AMSGRAD),
            momentum: on(flags::MOMENTUM),
            l2: on(flags::L2),
            clip: self.scalars.max_gradient_elem > 0.0,
            rule: flags::rule_code(self.coeffs.variant),
            stochastic: self.rounds(),
        }
    }

    /// Whether 16-bit params are rounded stochastically: then each tensor gets
    /// its own row, with [`GpuStep::round_key`].
    pub fn rounds(&self) -> bool {
        self.scalars.rounding_seed.is_some()
    }

    /// The `round_key` of the tensor at `position` in the optimizer: the CPU's
    /// per-element key for element indices under 2^32 (the shader hashes the
    /// index into it as the CPU does); 0 without stochastic rounding.
    pub fn round_key(&self, position: u64) -> u32 {
        self.scalars.rounding_seed.map_or(0, |seed| {
            let key = StochasticKey {
                seed,
                step: self.scalars.step,
                tensor: position,
            };
            key.key(0)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{AdamConfig, Algorithm};

    /// The `name: type` lines of one WGSL struct, in order.
    fn wgsl_struct(source: &str, name: &str) -> Vec<(String, String)> {
        let start = source
            .find(&format!("struct {name} {{"))
            .unwrap_or_else(|| panic!("no struct {name} in the shader"));
        let body = &source[start..];
        let body = &body[body.find('{').unwrap() + 1..body.find('}').unwrap()];
        body.lines()
            .map(|line| {
                line.split("//")
                    .next()
                    .unwrap()
                    .trim()
                    .trim_end_matches(',')
            })
            .filter(|line| !line.is_empty())
            .map(|line| {
                let (field, ty) = line.split_once(':').expect("a `name: type` line");
                (field.trim().to_string(), ty.trim().to_string())
            })
            .collect()
    }

    /// The value of `const NAME: u32 = Nu;` in the shader.
    fn wgsl_const(source: &str, name: &str) -> u32 {
        let line = source
            .lines()
            .find(|l| l.starts_with(&format!("const {name}: u32 = ")))
            .unwrap_or_else(|| panic!("no const {name} in the shader"));
        let value = line.split('=').nth(1).unwrap().trim();
        value[..value.find('u').unwrap()].parse().unwrap()
    }

    #[test]
    fn rows_follow_the_shaders_step_struct() {
        let fields = wgsl_struct(ADAM_WGSL, "Step");
        let names: Vec<&str> = fields.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names, STEP_FIELDS);
        for (i, (name, ty)) in fields.iter().enumerate() {
            let want = if i < COEFFS { "f32" } else { "u32" };
            assert_eq!(ty, want, "Step.{name}");
        }
    }

    #[test]
    fn rule_codes_are_the_shaders() {
        for (rule, flag) in [
            ("RULE_ADAM", 0),
            ("RULE_ADAMAX", flags::ADAMAX),
            ("RULE_NADAM", flags::NADAM),
            ("RULE_UNADAPTED", flags::UNADAPTED),
        ] {
            assert_eq!(
                wgsl_const(ADAM_WGSL, rule),
                flags::rule_code(flag),
                "{rule}"
            );
        }
        let scalars = StepScalars::new(&AdamConfig::default(), 1).unwrap();
        for (name, _) in GpuStep::new(&scalars).pipeline().overrides() {
            assert!(
                ADAM_WGSL.contains(&format!("\noverride {name}: ")),
                "override {name}"
            );
        }
    }

    #[test]
    fn a_row_is_the_cpu_kernels_coefficients_in_f32() {
        let cfg = AdamConfig {
            lr: 0.01,
            weight_decay: 0.1,
            momentum: 0.5,
            max_gradient_norm: 2.0,
            grad_scale: 8.0,
            maximize: true,
            ..AdamConfig::nadam()
        };
        let scalars = StepScalars::new(&cfg, 3).unwrap();
        let gpu = GpuStep::new(&scalars);
        let c = scalars.coeffs::<f32>(1.0);
        let at = |name| STEP_FIELDS.iter().position(|f| *f == name).unwrap();
        let row = gpu.row();
        assert_eq!(row[at("step_size")], c.step_size);
        assert_eq!(row[at("grad_mul")], -1.0 / 8.0); // sign / grad_scale
        assert_eq!(row[at("nadam_grad")], c.nadam_grad);
        assert_eq!(row, c.values());
        assert!(gpu.clips_norm());
        // A raw norm of 64 is 8 after the loss scale: clipped to 2, a factor of 1/4.
        assert_eq!(gpu.tensor_row(64.0)[at("grad_mul")], -1.0 / 32.0);
        assert_eq!(gpu.tensor_row(8.0)[at("grad_mul")], -1.0 / 8.0);
        let pipeline = gpu.pipeline();
        assert!(pipeline.l2 && pipeline.momentum && !pipeline.amsgrad && !pipeline.clip);
        assert_eq!(pipeline.rule, 2);
        let radam = StepScalars::new(&AdamConfig::radam(), 1).unwrap();
        assert_eq!(GpuStep::new(&radam).pipeline().rule, 3); // un-adapted at step 1
        let clipped = AdamConfig {
            max_gradient_elem: 0.5,
            algorithm: Algorithm::Adamax,
            ..Default::default()
        };
        let gpu = GpuStep::new(&StepScalars::new(&clipped, 1).unwrap());
        assert!(gpu.pipeline().clip && !gpu.clips_norm());
        assert_eq!(gpu.pipeline().rule, 1);
        assert!(!gpu.rounds() && !gpu.pipeline().stochastic && gpu.round_key(3) == 0);
    }

    #[test]
    fn the_round_key_is_the_cpus_hash_key() {
        let cfg = AdamConfig {
            stochastic_rounding: true,
            rounding_seed: 0x0123_4567_89ab_cdef,
            ..Default::default()
        };
        let gpu = GpuStep::new(&StepScalars::new(&cfg, 1 << 40).unwrap());
        assert!(gpu.rounds() && gpu.pipeline().stochastic);
        let key = StochasticKey {
            seed: cfg.rounding_seed,
            step: 1 << 40,
            tensor: 5,
        };
        assert_eq!(gpu.round_key(5), key.key(0));
        // What the shader computes for element 77 is the CPU's bits.
        let shader = crate::quant::stochastic::lowbias32(77 ^ gpu.round_key(5));
        assert_eq!(shader, key.bits(77));
        assert_ne!(gpu.round_key(5), gpu.round_key(6));
    }
}
