//! The one per-tensor record: a tensor's buffers by role, generic over what
//! holds them (slices, 16-bit storage, NumPy borrows, Python arrays). Listing,
//! mapping and splitting the buffers are written here once, for every holder.

use std::convert::Infallible;

use crate::storage::{Split, Stored, StoredMut};

/// The optimizer state of one tensor: what it keeps from step to step.
#[derive(Clone, Debug, PartialEq)]
pub struct State<W> {
    /// The first moment m.
    pub exp_avg: W,
    /// v for Adam; u, the infinity norm, for AdaMax (which Python names `exp_inf`).
    pub exp_avg_sq: W,
    /// AMSGrad's running max of `exp_avg_sq`; required when the group uses AMSGrad.
    pub max_exp_avg_sq: Option<W>,
    /// The momentum velocity; required when the group uses momentum or Nesterov.
    pub velocity: Option<W>,
}

/// Where a tensor's first element sits in its optimizer: what the random
/// bits of stochastic rounding depend on besides the seed and the step.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Origin {
    /// The tensor's position in the optimizer, counted over all groups.
    pub tensor: u64,
    /// The index, in that tensor, of the record's first element (past 0 for
    /// a shard of a tensor, or the tail of a split record).
    pub element: u64,
}

impl Origin {
    /// The origin `mid` elements further into the same tensor.
    pub fn advanced(self, mid: usize) -> Self {
        Origin {
            element: self.element + mid as u64,
            ..self
        }
    }
}

/// The buffers of one tensor for one step. `W` holds each buffer the step
/// writes, `R` the one it reads (the gradient).
#[derive(Clone, Debug, PartialEq)]
pub struct Tensor<W, R> {
    /// The param, updated in place.
    pub param: W,
    /// Its gradient, as long as the param.
    pub grad: R,
    /// A full-precision master copy of a 16-bit param, stepped instead of it
    /// (the param then receives it rounded).
    pub master_param: Option<W>,
    /// The optimizer state.
    pub state: State<W>,
    /// The index of its group's [`crate::StepScalars`].
    pub group: usize,
    /// Where it sits in its optimizer; None: its position in the list
    /// stepped, from element 0.
    pub origin: Option<Origin>,
}

/// The buffers of a tensor whose param, gradient and state are all stored as
/// the compute type `T`.
pub type TensorMut<'a, T> = Tensor<&'a mut [T], &'a [T]>;

/// The buffers of a tensor whose param, gradient or state may be stored in 16
/// bits (bfloat16 or float16) while the arithmetic runs in `T`. A master copy
/// must be stored as `T`.
pub type MixedTensorMut<'a, T> = Tensor<StoredMut<'a, T>, Stored<'a, T>>;

/// A buffer of a tensor's step, by what it holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Buffer {
    /// [`Tensor::param`].
    Param,
    /// [`Tensor::grad`].
    Grad,
    /// [`Tensor::master_param`].
    MasterParam,
    /// [`State::exp_avg`].
    ExpAvg,
    /// [`State::exp_avg_sq`].
    ExpAvgSq,
    /// [`State::max_exp_avg_sq`].
    MaxExpAvgSq,
    /// [`State::velocity`].
    Velocity,
}

impl Buffer {
    /// The buffers a step writes, in the order every list of them follows.
    pub const WRITTEN: [Buffer; 6] = [
        Buffer::Param,
        Buffer::MasterParam,
        Buffer::ExpAvg,
        Buffer::ExpAvgSq,
        Buffer::MaxExpAvgSq,
        Buffer::Velocity,
    ];

    /// The buffer's name: its field's, which is also its key in Python's `opt.state`
    /// (but for AdaMax's `exp_avg_sq`, there `exp_inf`).
    pub const fn name(self) -> &'static str {
        match self {
            Buffer::Param => "param",
            Buffer::Grad => "grad",
            Buffer::MasterParam => "master_param",
            Buffer::ExpAvg => "exp_avg",
            Buffer::ExpAvgSq => "exp_avg_sq",
            Buffer::MaxExpAvgSq => "max_exp_avg_sq",
            Buffer::Velocity => "velocity",
        }
    }

    /// The name of the absmax array of the buffer stored in 8 bits: its name
    /// and `_absmax`, as Python's `opt.state` keys it.
    pub const fn absmax_name(self) -> &'static str {
        match self {
            Buffer::ExpAvg => "exp_avg_absmax",
            Buffer::ExpAvgSq => "exp_avg_sq_absmax",
            Buffer::MaxExpAvgSq => "max_exp_avg_sq_absmax",
            Buffer::Velocity => "velocity_absmax",
            // Params and master copies are never stored in 8 bits.
            other => other.name(),
        }
    }
}

impl<W> State<W> {
    /// The two moments every rule keeps, with AMSGrad's running max and the
    /// velocity where the options need them.
    pub fn new(exp_avg: W, exp_avg_sq: W, max_exp_avg_sq: Option<W>, velocity: Option<W>) -> Self {
        State {
            exp_avg,
            exp_avg_sq,
            max_exp_avg_sq,
            velocity,
        }
    }

    /// Each buffer with what holds it, mapped by `f` (which may fail), in
    /// [`Buffer::WRITTEN`]'s order.
    pub fn try_map<V, E>(
        self,
        mut f: impl FnMut(Buffer, W) -> Result<V, E>,
    ) -> Result<State<V>, E> {
        Ok(State {
            exp_avg: f(Buffer::ExpAvg, self.exp_avg)?,
            exp_avg_sq: f(Buffer::ExpAvgSq, self.exp_avg_sq)?,
            max_exp_avg_sq: self
                .max_exp_avg_sq
                .map(|b| f(Buffer::MaxExpAvgSq, b))
                .transpose()?,
            velocity: self.velocity.map(|b| f(Buffer::Velocity, b)).transpose()?,
        })
    }

    /// [`State::try_map`] with a mapping that cannot fail.
    pub fn map<V>(self, mut f: impl FnMut(Buffer, W) -> V) -> State<V> {
        let mapped: Result<_, Infallible> = self.try_map(|b, w| Ok(f(b, w)));
        mapped.unwrap_or_else(|never| match never {})
    }

    /// A record of references to the buffers.
    pub fn as_ref(&self) -> State<&W> {
        State {
            exp_avg: &self.exp_avg,
            exp_avg_sq: &self.exp_avg_sq,
            max_exp_avg_sq: self.max_exp_avg_sq.as_ref(),
            velocity: self.velocity.as_ref(),
        }
    }

    /// A record of mutable references to the buffers.
    pub fn as_mut(&mut self) -> State<&mut W> {
        State {
            exp_avg: &mut self.exp_avg,
            exp_avg_sq: &mut self.exp_avg_sq,
            max_exp_avg_sq: self.max_exp_avg_sq.as_mut(),
            velocity: self.velocity.as_mut(),
        }
    }

    /// Every buffer present, with its role, in [`Buffer::WRITTEN`]'s order.
    pub fn buffers(&self) -> impl Iterator<Item = (Buffer, &W)> {
        [
            (Buffer::ExpAvg, Some(&self.exp_avg)),
            (Buffer::ExpAvgSq, Some(&self.exp_avg_sq)),
            (Buffer::MaxExpAvgSq, self.max_exp_avg_sq.as_ref()),
            (Buffer::Velocity, self.velocity.as_ref()),
        ]
        .into_iter()
        .filter_map(|(b, w)| Some((b, w?)))
    }
}

impl<W, R> Tensor<W, R> {
    /// A tensor of group `group` without a master copy.
    pub fn new(param: W, grad: R, state: State<W>, group: usize) -> Self {
        Tensor {
            param,
            grad,
            master_param: None,
            state,
            group,
            origin: None,
        }
    }

    /// The written buffers mapped by `w` and the gradient by `r` (either may
    /// fail), in [`Buffer::WRITTEN`]'s order, the gradient last.
    pub fn try_map<V, S, E>(
        self,
        mut w: impl FnMut(Buffer, W) -> Result<V, E>,
        r: impl FnOnce(R) -> Result<S, E>,
    ) -> Result<Tensor<V, S>, E> {
        Ok(Tensor {
            param: w(Buffer::Param, self.param)?,
            master_param: self
                .master_param
                .map(|m| w(Buffer::MasterParam, m))
                .transpose()?,
            state: self.state.try_map(&mut w)?,
            grad: r(self.grad)?,
            group: self.group,
            origin: self.origin,
        })
    }

    /// [`Tensor::try_map`] with mappings that cannot fail.
    pub fn map<V, S>(
        self,
        mut w: impl FnMut(Buffer, W) -> V,
        r: impl FnOnce(R) -> S,
    ) -> Tensor<V, S> {
        let mapped: Result<_, Infallible> = self.try_map(|b, x| Ok(w(b, x)), |g| Ok(r(g)));
        mapped.unwrap_or_else(|never| match never {})
    }

    /// A record of references to the buffers.
    pub fn as_ref(&self) -> Tensor<&W, &R> {
        Tensor {
            param: &self.param,
            grad: &self.grad,
            master_param: self.master_param.as_ref(),
            state: self.state.as_ref(),
            group: self.group,
            origin: self.origin,
        }
    }

    /// A record of mutable references to the buffers.
    pub fn as_mut(&mut self) -> Tensor<&mut W, &mut R> {
        Tensor {
            param: &mut self.param,
            grad: &mut self.grad,
            master_param: self.master_param.as_mut(),
            state: self.state.as_mut(),
            group: self.group,
            origin: self.origin,
        }
    }

    /// The same buffers with another gradient.
    pub fn with_grad<S>(self, grad: S) -> Tensor<W, S> {
        Tensor {
            param: self.param,
            grad,
            master_param: self.master_param,
            state: self.state,
            group: self.group,
            origin: self.origin,
        }
    }

    /// Every written buffer present, with its role, in [`Buffer::WRITTEN`]'s order.
    pub fn written(&self) -> impl Iterator<Item = (Buffer, &W)> {
        let head = [
            (Buffer::Param, Some(&self.param)),
            (Buffer::MasterParam, self.master_param.as_ref()),
        ];
        head.into_iter()
            .filter_map(|(b, w)| Some((b, w?)))
            .chain(self.state.buffers())
    }

    /// The written buffer of role `buffer`, if present (None for the gradient).
    pub fn get(&self, buffer: Buffer) -> Option<&W> {
        self.written().find(|(b, _)| *b == buffer).map(|(_, w)| w)
    }
}

impl<B: Split> Split for Option<B> {
    fn split_at(self, mid: usize) -> (Self, Self) {
        match self {
            Some(b) => {
                let (head, tail) = b.split_at(mid);
                (Some(head), Some(tail))
            }
            None => (None, None),
        }
    }
}

impl<W: Split> Split for State<W> {
    fn split_at(self, mid: usize) -> (Self, Self) {
        let (m0, m1) = self.exp_avg.split_at(mid);
        let (v0, v1) = self.exp_avg_sq.split_at(mid);
        let (x0, x1) = self.max_exp_avg_sq.split_at(mid);
        let (u0, u1) = self.velocity.split_at(mid);
        (
            State {
                exp_avg: m0,
                exp_avg_sq: v0,
                max_exp_avg_sq: x0,
                velocity: u0,
            },
            State {
                exp_avg: m1,
                exp_avg_sq: v1,
                max_exp_avg_sq: x1,
                velocity: u1,
            },
        )
    }
}

impl<W: Split, R: Split> Split for Tensor<W, R> {
    fn split_at(self, mid: usize) -> (Self, Self) {
        let (p0, p1) = self.param.split_at(mid);
        let (g0, g1) = self.grad.split_at(mid);
        let (w0, w1) = self.master_param.split_at(mid);
        let (s0, s1) = self.state.split_at(mid);
        let (group, origin) = (self.group, self.origin);
        (
            Tensor {
                param: p0,
                grad: g0,
                master_param: w0,
                state: s0,
                group,
                origin,
            },
            Tensor {
                param: p1,
                grad: g1,
                master_param: w1,
                state: s1,
                group,
                origin: origin.map(|o| o.advanced(mid)),
            },
        )
    }
}

impl<'a, T> From<TensorMut<'a, T>> for MixedTensorMut<'a, T> {
    fn from(t: TensorMut<'a, T>) -> Self {
        t.map(|_, w| StoredMut::Native(w), Stored::Native)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(n: usize) -> Tensor<Vec<u32>, Vec<u32>> {
        let ramp = |k: u32| (0..n as u32).map(|i| 100 * k + i).collect::<Vec<_>>();
        Tensor {
            param: ramp(0),
            grad: ramp(1),
            master_param: Some(ramp(2)),
            state: State {
                exp_avg: ramp(3),
                exp_avg_sq: ramp(4),
                max_exp_avg_sq: None,
                velocity: Some(ramp(6)),
            },
            group: 7,
            origin: Some(Origin {
                tensor: 3,
                element: 10,
            }),
        }
    }

    #[test]
    fn written_lists_the_present_buffers_in_order() {
        let t = record(3);
        let roles: Vec<Buffer> = t.written().map(|(b, _)| b).collect();
        assert_eq!(
            roles,
            [
                Buffer::Param,
                Buffer::MasterParam,
                Buffer::ExpAvg,
                Buffer::ExpAvgSq,
                Buffer::Velocity
            ]
        );
        assert_eq!(t.get(Buffer::Velocity).unwrap()[0], 600);
        assert!(t.get(Buffer::MaxExpAvgSq).is_none());
        let names: Vec<&str> = Buffer::WRITTEN.iter().map(|b| b.name()).collect();
        assert_eq!(
            names,
            [
                "param",
                "master_param",
                "exp_avg",
                "exp_avg_sq",
                "max_exp_avg_sq",
                "velocity"
            ]
        );
    }

    #[test]
    fn split_cuts_every_buffer_at_one_element() {
        let mut t = record(5);
        let views = Tensor {
            param: &mut t.param[..],
            grad: &t.grad[..],
            master_param: t.master_param.as_deref_mut(),
            state: t.state.as_mut().map(|_, v| &mut v[..]),
            group: t.group,
            origin: t.origin,
        };
        let (head, tail) = views.split_at(2);
        assert_eq!(head.written().count(), 5);
        for (b, w) in head.written() {
            assert_eq!(w.len(), 2, "{b:?}");
        }
        for (b, w) in tail.written() {
            assert_eq!(w.len(), 3, "{b:?}");
        }
        assert_eq!(
            (head.grad, tail.grad),
            (&[100, 101][..], &[102, 103, 104][..])
        );
        assert_eq!((head.group, tail.group), (7, 7));
        let at = |element| Some(Origin { tensor: 3, element });
        assert_eq!((head.origin, tail.origin), (at(10), at(12)));
        assert_eq!(tail.state.velocity.unwrap()[0], 602);
    }

    #[test]
    fn a_failed_mapping_stops_at_the_buffer_that_failed() {
        let mut seen = Vec::new();
        let result = record(2).try_map(
            |b, _| {
                seen.push(b);
                if b == Buffer::ExpAvgSq {
                    Err(b)
                } else {
                    Ok(())
                }
            },
            |_| Ok(()),
        );
        assert_eq!(result.unwrap_err(), Buffer::ExpAvgSq);
        assert_eq!(
            seen,
            [
                Buffer::Param,
                Buffer::MasterParam,
                Buffer::ExpAvg,
                Buffer::ExpAvgSq
            ]
        );
    }
}
