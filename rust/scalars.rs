//! Per-step scalars, computed once per step on the host in f64.
//!
//! The kernels never call `pow`: the bias corrections and every derived
//! coefficient are computed here, then rounded once to the element type.

use crate::config::{AdamConfig, Algorithm, BiasCorrection};
use crate::element::Float;
use crate::error::StepError;
use crate::kernel::{flags, Coeffs};

/// What one step of one parameter group needs, in f64.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct StepScalars {
    /// The multiplier of `m / denom` in the update: `lr / (1 - beta1^t)` for
    /// Algorithm 1 and AdaMax, `lr * sqrt(1 - beta2^t) / (1 - beta1^t)` for the
    /// efficient form, `lr / (1 - beta1_t)` for downhill 0.4.0.
    pub step_size: f64,
    /// The multiplier of `sqrt(v)` in the denominator: `1 / sqrt(1 - beta2^t)`
    /// (Algorithm 1), 1 (efficient form), `1 / sqrt(1 - beta2)` (downhill 0.4.0).
    pub inv_bias_correction2_sqrt: f64,
    /// The weight of the gradient in the first moment's lerp, `1 - beta1 * lambda^(t-1)`.
    pub one_minus_beta1: f64,
    /// The second moment's decay.
    pub beta2: f64,
    /// The weight of the squared gradient in the second moment, `1 - beta2`.
    pub one_minus_beta2: f64,
    /// Added to the denominator.
    pub eps: f64,
    /// L2 coefficient added to the gradient (0 when the decay is decoupled).
    pub l2: f64,
    /// Decoupled decay factor `1 - lr * weight_decay` (1 otherwise).
    pub decay: f64,
    /// The velocity's keep factor: `momentum`, or `momentum^2` for Nesterov.
    pub momentum_keep: f64,
    /// The velocity's multiple of the Adam step: 1, or `1 + momentum` for Nesterov.
    pub momentum_step: f64,
    /// Element clipping limit (0 = off).
    pub max_gradient_elem: f64,
    /// Per-tensor L2-norm limit (0 = off; ignored when element clipping is on).
    pub max_gradient_norm: f64,
    /// The loss scale the gradients carry (divided out in the kernel).
    pub grad_scale: f64,
    /// NAdam's multiple of `g / denom`, `lr * (1 - mu_t) / (1 - mu_product)` (0 otherwise).
    pub nadam_grad: f64,
    /// Ascend instead of descend (the gradient's sign is flipped on read).
    pub maximize: bool,
    /// Divide by the running max of the second moment.
    pub amsgrad: bool,
    /// Keep a momentum velocity on top of the Adam step.
    pub velocity: bool,
    /// The update rule of this step.
    pub rule: Rule,
    /// The step's number (the first update is step 1).
    pub step: u64,
    /// With stochastic rounding of 16-bit params, its seed (else None).
    pub rounding_seed: Option<u64>,
}

/// The update rule of one step, chosen on the host.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Rule {
    /// `m / (sqrt(v) * a + eps)`: Adam, its efficient form, rectified RAdam.
    Adam,
    /// `m / u`, AdaMax.
    Adamax,
    /// Adam's direction plus NAdam's gradient term.
    NAdam,
    /// `m` alone: RAdam while its rectification is undefined.
    Unadapted,
}

impl Rule {
    /// The rule's name: `"adam"`, `"adamax"`, `"nadam"` or `"unadapted"`.
    pub const fn name(self) -> &'static str {
        match self {
            Rule::Adam => "adam",
            Rule::Adamax => "adamax",
            Rule::NAdam => "nadam",
            Rule::Unadapted => "unadapted",
        }
    }
}

/// What a variant carries on the host from step to step: NAdam's running
/// product of its momentum coefficients (`mu_product`, 1 before the first step).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Carry {
    /// NAdam's product of `mu_1 ... mu_t` over the steps taken.
    pub mu_product: f64,
}

impl Default for Carry {
    fn default() -> Self {
        Carry { mu_product: 1.0 }
    }
}

/// Where one tensor stands between steps: how many steps it has taken and what
/// they carried. Each tensor keeps its own (a tensor left out of a step, having
/// no gradient, does not advance, as `torch.optim` keeps a `step` per param), so
/// the bias corrections are per tensor.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Count {
    /// Steps taken (0 before the first).
    pub steps: u64,
    /// What the last step carried (NAdam's product).
    pub carry: Carry,
}

impl Count {
    /// What tells two counts apart: the steps and the carry's bits.
    fn key(&self) -> (u64, u64) {
        (self.steps, self.carry.mu_product.to_bits())
    }

    /// The scalars of the next step from this count under `config`, and the
    /// count that step leaves.
    fn next_step(&self, config: &AdamConfig) -> Result<(StepScalars, Count), StepError> {
        let steps = self.steps.checked_add(1).ok_or(StepError::StepOverflow)?;
        let (s, carry) = StepScalars::next(config, steps, self.carry)?;
        Ok((s, Count { steps, carry }))
    }
}

/// The scalars of one step of tensors that each stand at their own [`Count`]:
/// one [`StepScalars`] per distinct (group, count) among them, so tensors that
/// stepped together share them (and a step in which every tensor of a group
/// stands at one count computes what one count per group did).
#[derive(Clone, Debug)]
pub struct TensorSteps {
    /// The distinct scalars; what a tensor's `group` field indexes in the step.
    pub scalars: Vec<StepScalars>,
    /// Per tensor, in the order given: its index into `scalars`.
    pub index: Vec<usize>,
    /// Per tensor: its count after this step.
    pub next: Vec<Count>,
}

impl TensorSteps {
    /// The scalars of the next step of each tensor, given as (its group's index
    /// into `configs`, its count). An error names the group whose options (or
    /// a tensor of which, at `u64::MAX` steps) cannot step.
    pub fn plan(
        configs: &[AdamConfig],
        tensors: impl IntoIterator<Item = (usize, Count)>,
    ) -> Result<Self, (usize, StepError)> {
        let tensors = tensors.into_iter();
        let mut plan = TensorSteps {
            scalars: Vec::with_capacity(configs.len()),
            index: Vec::with_capacity(tensors.size_hint().0),
            next: Vec::with_capacity(tensors.size_hint().0),
        };
        // (group, steps, carry bits) -> index into scalars. Neighbours usually
        // share a count, so the last one is tried before the map.
        let mut seen = std::collections::HashMap::new();
        let mut last: Option<((usize, u64, u64), usize, Count)> = None;
        for (i, (group, count)) in tensors.enumerate() {
            let (steps, carry) = count.key();
            let key = (group, steps, carry);
            let hit = match last {
                Some((k, index, next)) if k == key => Some((index, next)),
                _ => seen.get(&key).copied(),
            };
            let (index, next) = match hit {
                Some(found) => found,
                None => {
                    let config = configs.get(group).ok_or((
                        group,
                        StepError::GroupOutOfRange {
                            index: i,
                            group,
                            groups: configs.len(),
                        },
                    ))?;
                    let (s, next) = count.next_step(config).map_err(|e| (group, e))?;
                    plan.scalars.push(s);
                    let found = (plan.scalars.len() - 1, next);
                    seen.insert(key, found);
                    found
                }
            };
            last = Some((key, index, next));
            plan.index.push(index);
            plan.next.push(next);
        }
        Ok(plan)
    }
}

/// The step counts of a fixed list of tensors, each of a parameter group, and
/// the plans of their steps. While the tensors of each group stand at one count
/// (every step gave each of them a gradient: the common case) one count per
/// group is kept, and a step of every tensor is planned per group, which reads
/// nothing per tensor; otherwise each tensor's own count is kept and
/// [`TensorSteps::plan`] plans the step. Both plan the same step.
#[derive(Clone, Debug)]
pub struct StepCounts {
    /// The tensors' groups, each once, in the order of their first tensor.
    groups: Vec<usize>,
    /// Per group of `groups`, the index of its first tensor.
    firsts: Vec<usize>,
    /// Per tensor, the index of its group in `groups`.
    rank: Vec<usize>,
    /// Per group of `groups`, the count its tensors share, while they do.
    shared: Option<Vec<Count>>,
    /// Per tensor, its count (current while `shared` is None).
    each: Vec<Count>,
}

impl StepCounts {
    /// The counts of tensors given as (the index of its group, its count).
    pub fn new(tensors: impl IntoIterator<Item = (usize, Count)>) -> Self {
        let mut counts = StepCounts {
            groups: Vec::new(),
            firsts: Vec::new(),
            rank: Vec::new(),
            shared: None,
            each: Vec::new(),
        };
        let mut ranks = std::collections::HashMap::new();
        for (i, (group, count)) in tensors.into_iter().enumerate() {
            let rank = *ranks.entry(group).or_insert_with(|| {
                counts.groups.push(group);
                counts.firsts.push(i);
                counts.groups.len() - 1
            });
            counts.rank.push(rank);
            counts.each.push(count);
        }
        counts.share();
        counts
    }

    /// The number of tensors.
    pub fn len(&self) -> usize {
        self.rank.len()
    }

    /// Whether there are no tensors.
    pub fn is_empty(&self) -> bool {
        self.rank.is_empty()
    }

    /// Tensor `i`'s group.
    pub fn group(&self, i: usize) -> usize {
        self.groups[self.rank[i]]
    }

    /// Tensor `i`'s count.
    pub fn get(&self, i: usize) -> Count {
        match &self.shared {
            Some(shared) => shared[self.rank[i]],
            None => self.each[i],
        }
    }

    /// Keep one count per group if the tensors of each group share one.
    fn share(&mut self) {
        let shared: Vec<Count> = self.firsts.iter().map(|&i| self.each[i]).collect();
        let all = (self.each.iter().zip(&self.rank)).all(|(c, &r)| c.key() == shared[r].key());
        self.shared = all.then_some(shared);
    }

    /// The plan of a step of the tensors `stepped` (their indices, increasing),
    /// with each group's options `configs`: what [`TensorSteps::plan`] gives for
    /// those tensors at their counts, errors included.
    pub fn plan(
        &self,
        configs: &[AdamConfig],
        stepped: &[usize],
    ) -> Result<CountedSteps, (usize, StepError)> {
        if let Some(plan) = self.plan_shared(configs, stepped) {
            return Ok(plan);
        }
        let each = stepped.iter().map(|&i| (self.group(i), self.get(i)));
        let TensorSteps {
            scalars,
            index,
            next,
        } = TensorSteps::plan(configs, each)?;
        Ok(CountedSteps {
            scalars,
            next: Next::Each { index, next },
        })
    }

    /// The plan of a step of every tensor, planned per group while the groups
    /// share their counts (None otherwise, or when a group cannot step: then
    /// [`TensorSteps::plan`] names the error).
    fn plan_shared(&self, configs: &[AdamConfig], stepped: &[usize]) -> Option<CountedSteps> {
        let shared = self.shared.as_ref()?;
        if stepped.len() != self.len() {
            return None; // the indices are increasing: all of them, or not every tensor
        }
        let mut scalars = Vec::with_capacity(self.groups.len());
        let mut next = Vec::with_capacity(self.groups.len());
        for (&group, count) in self.groups.iter().zip(shared) {
            let (s, count) = count.next_step(configs.get(group)?).ok()?;
            scalars.push(s);
            next.push(count);
        }
        Some(CountedSteps {
            scalars,
            next: Next::Shared(next),
        })
    }

    /// Advance the tensors `stepped` (as given to [`StepCounts::plan`]) to the
    /// counts of `plan`, which stepped them.
    pub fn advance(&mut self, stepped: &[usize], plan: CountedSteps) {
        let next = match (plan.next, &mut self.shared) {
            (Next::Shared(next), Some(shared)) => {
                *shared = next;
                return;
            }
            (Next::Shared(next), None) => self.rank.iter().map(|&r| next[r]).collect(),
            (Next::Each { next, .. }, _) => next,
        };
        if let Some(shared) = self.shared.take() {
            for (count, &r) in self.each.iter_mut().zip(&self.rank) {
                *count = shared[r];
            }
        }
        for (&i, next) in stepped.iter().zip(next) {
            self.each[i] = next;
        }
        self.share();
    }
}

/// The plan of one step of a [`StepCounts`]' tensors (those given to its `plan`).
#[derive(Clone, Debug)]
pub struct CountedSteps {
    /// The distinct scalars of the step; what a tensor's `group` field indexes.
    pub scalars: Vec<StepScalars>,
    next: Next,
}

/// The counts a [`CountedSteps`] leaves its tensors at.
#[derive(Clone, Debug)]
enum Next {
    /// Every tensor stepped, each group at one count: per group, its next count
    /// (a tensor's scalars are its group's).
    Shared(Vec<Count>),
    /// Per tensor stepped, its index into the scalars and its next count.
    Each { index: Vec<usize>, next: Vec<Count> },
}

impl CountedSteps {
    /// Per tensor stepped, in the order given, its index into `scalars`
    /// (`counts` are those that planned the step).
    pub fn indices<'a>(&'a self, counts: &'a StepCounts) -> &'a [usize] {
        match &self.next {
            Next::Shared(_) => &counts.rank,
            Next::Each { index, .. } => index,
        }
    }
}

/// NAdam's momentum coefficient of step `t`.
fn nadam_mu(config: &AdamConfig, t: f64) -> f64 {
    config.beta1 * (1.0 - 0.5 * 0.96f64.powf(t * config.momentum_decay))
}

impl StepScalars {
    /// The scalars of step `step` (the first update is step 1), after validating
    /// `config`. For NAdam this recomputes the carried product from step 1,
    /// which costs O(step): a training loop should use [`StepScalars::next`].
    pub fn new(config: &AdamConfig, step: u64) -> Result<Self, StepError> {
        let mut carry = Carry::default();
        if config.algorithm == Algorithm::NAdam {
            for i in 1..step {
                carry.mu_product *= nadam_mu(config, i as f64);
            }
        }
        Self::next(config, step, carry).map(|(scalars, _)| scalars)
    }

    /// The scalars of step `step` given what the previous step carried, and
    /// what this one carries to the next.
    pub fn next(config: &AdamConfig, step: u64, carry: Carry) -> Result<(Self, Carry), StepError> {
        config.validate()?;
        if step == 0 {
            return Err(StepError::StepZero);
        }
        // u64 -> f64 is exact up to 2^53 steps; beyond that beta^t is 0 in f64 anyway.
        let t = step as f64;
        let bias_correction1 = 1.0 - config.beta1.powf(t);
        let bias_correction2 = 1.0 - config.beta2.powf(t);
        let beta1_t = config.beta1 * config.beta1_decay.powf(t - 1.0);
        let lr = config.lr;
        let mut carry = carry;
        let mut nadam_grad = 0.0;
        let (step_size, inv_bias_correction2_sqrt, rule) = match config.algorithm {
            Algorithm::Adam => match config.bias_correction {
                BiasCorrection::Downhill040 => (
                    lr / (1.0 - beta1_t),
                    1.0 / (1.0 - config.beta2).sqrt(),
                    Rule::Adam,
                ),
                BiasCorrection::Adam if config.efficient_form => (
                    lr * bias_correction2.sqrt() / bias_correction1,
                    1.0,
                    Rule::Adam,
                ),
                BiasCorrection::Adam => (
                    lr / bias_correction1,
                    1.0 / bias_correction2.sqrt(),
                    Rule::Adam,
                ),
            },
            Algorithm::Adamax => (lr / bias_correction1, 1.0, Rule::Adamax),
            Algorithm::NAdam => {
                let mu = nadam_mu(config, t);
                let mu_next = nadam_mu(config, t + 1.0);
                carry.mu_product *= mu;
                nadam_grad = lr * (1.0 - mu) / (1.0 - carry.mu_product);
                (
                    lr * mu_next / (1.0 - carry.mu_product * mu_next),
                    1.0 / bias_correction2.sqrt(),
                    Rule::NAdam,
                )
            }
            Algorithm::RAdam => {
                let rho_inf = 2.0 / (1.0 - config.beta2) - 1.0;
                let rho_t = rho_inf - 2.0 * t * config.beta2.powf(t) / bias_correction2;
                if rho_t > 5.0 {
                    let rect = ((rho_t - 4.0) * (rho_t - 2.0) * rho_inf
                        / ((rho_inf - 4.0) * (rho_inf - 2.0) * rho_t))
                        .sqrt();
                    (
                        lr * rect * bias_correction2.sqrt() / bias_correction1,
                        1.0,
                        Rule::Adam,
                    )
                } else {
                    (lr / bias_correction1, 1.0, Rule::Unadapted)
                }
            }
        };
        let decoupled = config.decoupled_weight_decay;
        let mu = config.momentum;
        let scalars = StepScalars {
            step_size,
            inv_bias_correction2_sqrt,
            one_minus_beta1: 1.0 - beta1_t,
            beta2: config.beta2,
            one_minus_beta2: 1.0 - config.beta2,
            eps: config.eps,
            l2: if decoupled { 0.0 } else { config.weight_decay },
            decay: if decoupled {
                1.0 - config.lr * config.weight_decay
            } else {
                1.0
            },
            momentum_keep: if config.nesterov { mu * mu } else { mu },
            momentum_step: if config.nesterov { 1.0 + mu } else { 1.0 },
            max_gradient_elem: config.max_gradient_elem,
            max_gradient_norm: config.max_gradient_norm,
            grad_scale: config.grad_scale,
            nadam_grad,
            maximize: config.maximize,
            amsgrad: config.amsgrad,
            velocity: config.uses_velocity(),
            rule,
            step,
            rounding_seed: config.stochastic_rounding.then_some(config.rounding_seed),
        };
        Ok((scalars, carry))
    }

    /// Whether each tensor's gradient norm must be measured before the step.
    pub(crate) fn clips_norm(&self) -> bool {
        self.max_gradient_norm > 0.0 && self.max_gradient_elem == 0.0
    }

    /// The factor that clipping by norm applies to a gradient whose raw
    /// (still loss-scaled) L2 norm is `raw_norm`.
    pub(crate) fn norm_scale(&self, raw_norm: f64) -> f64 {
        let norm = raw_norm / self.grad_scale;
        if self.clips_norm() && norm > self.max_gradient_norm {
            self.max_gradient_norm / norm
        } else {
            1.0
        }
    }

    /// Round to the element type once, for the kernel. `norm_scale` is the
    /// tensor's norm-clipping factor. The loss scale is folded in: raw
    /// gradients are clamped at `max_gradient_elem * grad_scale`, then
    /// multiplied by `sign * norm_scale / grad_scale`.
    pub(crate) fn coeffs<T: Float>(&self, norm_scale: f64) -> Coeffs<T> {
        let sign = if self.maximize { -1.0 } else { 1.0 };
        let mut variant = match self.rule {
            Rule::Adam => 0,
            Rule::Adamax => flags::ADAMAX,
            Rule::NAdam => flags::NADAM,
            Rule::Unadapted => flags::UNADAPTED,
        };
        for (on, flag) in [
            (self.l2 != 0.0, flags::L2),
            (self.amsgrad, flags::AMSGRAD),
            (self.velocity, flags::MOMENTUM),
        ] {
            if on {
                variant |= flag;
            }
        }
        let clip = if self.max_gradient_elem > 0.0 {
            self.max_gradient_elem * self.grad_scale
        } else {
            f64::INFINITY
        };
        Coeffs {
            step_size: T::from_f64(self.step_size),
            inv_bias_correction2_sqrt: T::from_f64(self.inv_bias_correction2_sqrt),
            one_minus_beta1: T::from_f64(self.one_minus_beta1),
            beta2: T::from_f64(self.beta2),
            one_minus_beta2: T::from_f64(self.one_minus_beta2),
            eps: T::from_f64(self.eps),
            l2: T::from_f64(self.l2),
            decay: T::from_f64(self.decay),
            grad_mul: T::from_f64(sign * norm_scale / self.grad_scale),
            clip: T::from_f64(clip),
            nadam_grad: T::from_f64(self.nadam_grad),
            momentum_keep: T::from_f64(self.momentum_keep),
            momentum_step: T::from_f64(self.momentum_step),
            variant,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tensors_at_one_count_share_scalars_and_each_count_gets_its_own() {
        let configs = [AdamConfig::default(), AdamConfig::nadam()];
        let at = |steps, mu_product| Count {
            steps,
            carry: Carry { mu_product },
        };
        let tensors = [
            (0, at(3, 1.0)),
            (0, at(3, 1.0)),
            (0, at(0, 1.0)),
            (1, at(3, 0.5)),
            (0, at(3, 1.0)),
            (1, at(3, 0.25)),
        ];
        let plan = TensorSteps::plan(&configs, tensors).unwrap();
        assert_eq!(plan.index, [0, 0, 1, 2, 0, 3]);
        assert_eq!(plan.scalars.len(), 4);
        for ((group, count), &index) in tensors.iter().zip(&plan.index) {
            let (want, carry) =
                StepScalars::next(&configs[*group], count.steps + 1, count.carry).unwrap();
            assert_eq!(plan.scalars[index], want);
            assert_eq!(
                plan.next[tensors.iter().position(|t| t == &(*group, *count)).unwrap()].carry,
                carry
            );
        }
        assert_eq!(plan.next[2].steps, 1);
        assert_eq!(plan.next[0].steps, 4);
    }

    /// `counts.plan` against `TensorSteps::plan` over `reference` (each tensor's
    /// group and count), which it must equal; then both advance.
    fn plan_both(
        counts: &mut StepCounts,
        reference: &mut [(usize, Count)],
        configs: &[AdamConfig],
        stepped: &[usize],
    ) {
        let got = counts.plan(configs, stepped).unwrap();
        let want = TensorSteps::plan(configs, stepped.iter().map(|&i| reference[i])).unwrap();
        assert_eq!(got.scalars, want.scalars);
        assert_eq!(got.indices(counts), want.index);
        counts.advance(stepped, got);
        for (&i, next) in stepped.iter().zip(want.next) {
            reference[i].1 = next;
        }
        for (i, &(group, count)) in reference.iter().enumerate() {
            assert_eq!((counts.group(i), counts.get(i)), (group, count));
        }
    }

    #[test]
    fn step_counts_plan_as_tensor_steps_does_shared_or_not() {
        let configs = [
            AdamConfig::nadam(),
            AdamConfig::default(),
            AdamConfig::adamw(),
        ];
        let groups = [1, 0, 1, 2, 0, 0];
        let mut reference: Vec<_> = groups.iter().map(|&g| (g, Count::default())).collect();
        let mut counts = StepCounts::new(reference.iter().copied());
        assert_eq!(counts.len(), 6);
        let all: Vec<usize> = (0..6).collect();
        for _ in 0..3 {
            plan_both(&mut counts, &mut reference, &configs, &all);
            assert!(
                counts.shared.is_some(),
                "every tensor stepped: one count per group"
            );
        }
        // Tensor 4 (of group 0) sits a step out: group 0's counts part.
        plan_both(&mut counts, &mut reference, &configs, &[0, 1, 2, 3, 5]);
        assert!(counts.shared.is_none());
        plan_both(&mut counts, &mut reference, &configs, &all);
        // Only tensor 4 steps, catching up: shared again.
        plan_both(&mut counts, &mut reference, &configs, &[4]);
        assert!(counts.shared.is_some());
        plan_both(&mut counts, &mut reference, &configs, &all);
        // Built at counts of their own (a loaded state).
        let at = |steps| Count {
            steps,
            carry: Carry::default(),
        };
        let mut reference = vec![(0, at(2)), (0, at(5)), (1, at(5))];
        let mut counts = StepCounts::new(reference.iter().copied());
        assert!(counts.shared.is_none());
        plan_both(&mut counts, &mut reference, &configs[1..], &[0, 1, 2]);
        plan_both(&mut counts, &mut reference, &configs[1..], &[0]);
        plan_both(&mut counts, &mut reference, &configs[1..], &[0]);
        assert!(
            counts.shared.is_none(),
            "the carries differ: NAdam's is not Adam's"
        );
        let empty = StepCounts::new([]);
        assert!(empty.is_empty());
        assert!(empty.plan(&configs, &[]).unwrap().scalars.is_empty());
    }

    #[test]
    fn step_counts_fail_as_tensor_steps_does() {
        let bad = AdamConfig {
            lr: -1.0,
            ..Default::default()
        };
        let last = Count {
            steps: u64::MAX,
            ..Count::default()
        };
        let zero = Count::default();
        // (each group's options, each tensor's group and count)
        type Case<'a> = (&'a [AdamConfig], [(usize, Count); 3]);
        let cases: [Case; 3] = [
            (
                &[AdamConfig::default(), bad],
                [(0, zero), (1, zero), (1, zero)],
            ),
            (&[AdamConfig::default()], [(0, last), (0, last), (0, last)]),
            (&[AdamConfig::default()], [(0, zero), (1, zero), (0, zero)]),
        ];
        for (configs, tensors) in cases {
            let counts = StepCounts::new(tensors);
            assert!(counts.shared.is_some());
            let got = counts.plan(configs, &[0, 1, 2]).map(|_| ()).unwrap_err();
            assert_eq!(got, TensorSteps::plan(configs, tensors).unwrap_err());
        }
    }

    #[test]
    fn planning_names_the_group_that_cannot_step() {
        let bad = AdamConfig {
            lr: -1.0,
            ..Default::default()
        };
        let configs = [AdamConfig::default(), bad];
        let zero = Count::default();
        let e = TensorSteps::plan(&configs, [(0, zero), (1, zero)]).unwrap_err();
        assert!(matches!(e, (1, StepError::Config(_))));
        let last = Count {
            steps: u64::MAX,
            ..zero
        };
        let e = TensorSteps::plan(&configs, [(0, zero), (0, last)]).unwrap_err();
        assert_eq!(e, (0, StepError::StepOverflow));
        let e = TensorSteps::plan(&configs, [(2, zero)]).unwrap_err();
        assert!(matches!(e.1, StepError::GroupOutOfRange { group: 2, .. }));
    }

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
    fn efficient_form_folds_the_corrections_into_the_step() {
        let cfg = AdamConfig {
            efficient_form: true,
            ..Default::default()
        };
        let s = StepScalars::new(&cfg, 3).unwrap();
        let want = 1e-3 * (1.0 - 0.999f64.powi(3)).sqrt() / (1.0 - 0.9f64.powi(3));
        assert!((s.step_size - want).abs() <= 1e-15 * want);
        assert_eq!(s.inv_bias_correction2_sqrt, 1.0);
    }

    #[test]
    fn downhill_040_rescales_by_constants_with_decayed_beta1() {
        let cfg = AdamConfig {
            beta1_decay: 0.5,
            bias_correction: BiasCorrection::Downhill040,
            ..Default::default()
        };
        let s = StepScalars::new(&cfg, 3).unwrap();
        let beta1_t = 0.9 * 0.25;
        assert_eq!(s.one_minus_beta1, 1.0 - beta1_t);
        assert!((s.step_size - 1e-3 / (1.0 - beta1_t)).abs() <= 1e-18);
        assert_eq!(s.inv_bias_correction2_sqrt, 1.0 / (1.0 - 0.999f64).sqrt());
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

    #[test]
    fn nesterov_keeps_mu_squared_and_steps_one_plus_mu() {
        let cfg = AdamConfig {
            momentum: 0.5,
            nesterov: true,
            ..Default::default()
        };
        let s = StepScalars::new(&cfg, 1).unwrap();
        assert_eq!((s.momentum_keep, s.momentum_step), (0.25, 1.5));
    }
}
