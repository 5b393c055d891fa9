"""Learning-rate schedules: values from their formulas, argument checks, and a
schedule driving an optimizer exactly as a float lr set by hand each step."""

from __future__ import annotations

import math

import numpy as np
import pytest
import radam
from helpers import assert_same_run, assert_unchanged, raises_named, snapshot
from radam.schedules import (
    Constant,
    ExponentialDecay,
    LinearWarmup,
    Schedule,
    StepDecay,
    WarmupCosineDecay,
    from_config,
)

# ---------------------------------------------------------------- values


def test_constant():
    s = Constant(0.01)
    assert [s(c) for c in (0, 1, 10**9)] == [0.01, 0.01, 0.01]


def test_linear_warmup():
    s = LinearWarmup(peak_value=1.0, warmup_steps=4, init_value=0.2)
    assert s(0) == 0.2
    assert s(1) == pytest.approx(0.4)
    assert s(2) == pytest.approx(0.6)
    assert s(3) == pytest.approx(0.8)
    assert s(4) == 1.0 and s(100) == 1.0
    assert LinearWarmup(3e-4, 0)(0) == 3e-4  # no warmup at all
    assert LinearWarmup(1.0, 10)(0) == 0.0  # optax's default init_value


def test_warmup_cosine_decay():
    s = WarmupCosineDecay(peak_value=1.0, decay_steps=110, warmup_steps=10, end_value=0.1)
    assert s(0) == 0.0
    assert s(5) == pytest.approx(0.5)
    assert s(10) == 1.0  # the peak, where the cosine starts
    # halfway through the decay: end + (peak - end) * (1 + cos(pi/2)) / 2
    assert s(60) == pytest.approx(0.1 + 0.9 * 0.5)
    assert s(35) == pytest.approx(0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * 25 / 100)))
    assert s(110) == pytest.approx(0.1)
    assert s(10**6) == 0.1
    plain = WarmupCosineDecay(peak_value=2.0, decay_steps=4)  # no warmup
    expected = [2.0 * 0.5 * (1 + math.cos(math.pi * c / 4)) for c in range(5)]
    assert [plain(c) for c in range(5)] == pytest.approx(expected)
    assert plain(0) == 2.0 and plain(4) == pytest.approx(0.0, abs=1e-15)
    # decay_steps == warmup_steps: warmup, then end_value
    edge = WarmupCosineDecay(1.0, decay_steps=2, warmup_steps=2, end_value=0.5)
    assert [edge(c) for c in range(4)] == [0.0, 0.5, 0.5, 0.5]


def test_exponential_decay():
    s = ExponentialDecay(init_value=1.0, decay_rate=0.5, transition_steps=2)
    assert [s(c) for c in range(5)] == pytest.approx([1.0, 0.5**0.5, 0.5, 0.5**1.5, 0.25])
    stairs = ExponentialDecay(1.0, 0.5, transition_steps=2, staircase=True)
    assert [stairs(c) for c in range(6)] == [1.0, 1.0, 0.5, 0.5, 0.25, 0.25]
    later = ExponentialDecay(2.0, 0.1, transition_begin=3)
    assert [later(c) for c in range(6)] == pytest.approx([2.0, 2.0, 2.0, 2.0, 0.2, 0.02])
    floor = ExponentialDecay(1.0, 0.1, end_value=0.05)
    assert [floor(c) for c in range(4)] == pytest.approx([1.0, 0.1, 0.05, 0.05])
    ceiling = ExponentialDecay(1.0, 2.0, end_value=3.0)
    assert [ceiling(c) for c in range(4)] == [1.0, 2.0, 3.0, 3.0]
    # PyTorch's ExponentialLR(gamma): lr * gamma^count
    torch_like = ExponentialDecay(0.1, 0.9)
    assert torch_like(7) == pytest.approx(0.1 * 0.9**7)


def test_step_decay():
    s = StepDecay(init_value=1.0, step_size=3, gamma=0.5)
    assert [s(c) for c in range(8)] == [1.0, 1.0, 1.0, 0.5, 0.5, 0.5, 0.25, 0.25]
    assert StepDecay(0.1, 30)(65) == pytest.approx(0.1 * 0.1**2)  # torch's StepLR default gamma


def test_values_are_float64_python_floats():
    for s in (Constant(1), LinearWarmup(1, 3), WarmupCosineDecay(1, 5), StepDecay(1, 2)):
        assert type(s(1)) is float


@pytest.mark.parametrize(
    "make, name",
    [
        (lambda: Constant(-1.0), "value"),
        (lambda: Constant(float("nan")), "value"),
        (lambda: Constant("0.1"), "value"),
        (lambda: LinearWarmup(1.0, -1), "warmup_steps"),
        (lambda: LinearWarmup(1.0, 2.5), "warmup_steps"),
        (lambda: LinearWarmup(1.0, True), "warmup_steps"),
        (lambda: LinearWarmup(float("inf"), 3), "peak_value"),
        (lambda: LinearWarmup(1.0, 3, init_value=-0.1), "init_value"),
        (lambda: WarmupCosineDecay(1.0, 0), "decay_steps"),
        (lambda: WarmupCosineDecay(1.0, 10, warmup_steps=11), "warmup_steps"),
        (lambda: WarmupCosineDecay(1.0, 10, end_value=-1), "end_value"),
        (lambda: ExponentialDecay(1.0, 0.0), "decay_rate"),
        (lambda: ExponentialDecay(1.0, 0.5, transition_steps=0), "transition_steps"),
        (lambda: ExponentialDecay(1.0, 0.5, transition_begin=-2), "transition_begin"),
        (lambda: ExponentialDecay(1.0, 0.5, staircase=1), "staircase"),
        (lambda: ExponentialDecay(1.0, 0.5, end_value=float("nan")), "end_value"),
        (lambda: StepDecay(1.0, 0), "step_size"),
        (lambda: StepDecay(1.0, 2, gamma=-0.5), "gamma"),
    ],
)
def test_bad_arguments_name_themselves(make, name):
    with raises_named((TypeError, ValueError), name):
        make()


@pytest.mark.parametrize(
    "count, exc", [(-1, ValueError), (1.5, TypeError), ("3", TypeError), (True, TypeError)]
)
def test_bad_count(count, exc):
    with raises_named(exc, "step count"):
        StepDecay(1.0, 2)(count)


def test_repr_equality_and_config():
    s = WarmupCosineDecay(peak_value=1e-3, decay_steps=1000, warmup_steps=100)
    assert repr(s) == (
        "WarmupCosineDecay(peak_value=0.001, decay_steps=1000, warmup_steps=100, "
        "init_value=0.0, end_value=0.0)"
    )
    assert s == WarmupCosineDecay(1e-3, 1000, 100)
    assert s != WarmupCosineDecay(1e-3, 1000, 99)
    assert s != LinearWarmup(1e-3, 100)
    assert hash(s) == hash(WarmupCosineDecay(1e-3, 1000, 100))
    for sched in (
        Constant(2),
        LinearWarmup(1.0, 3, 0.5),
        s,
        ExponentialDecay(1.0, 0.5, 3, 2, True, 0.01),
        StepDecay(0.1, 5, 0.3),
    ):
        rebuilt = from_config(sched.config())
        assert rebuilt == sched and type(rebuilt) is type(sched)
        assert [rebuilt(c) for c in range(20)] == [sched(c) for c in range(20)]
    with pytest.raises(AttributeError, match="immutable"):
        s.peak_value = 1.0
    with raises_named(ValueError, "Nope"):
        from_config({"name": "Nope", "args": {}})
    with raises_named(ValueError, "unknown argument"):
        from_config({"name": "Constant", "args": {"value": 1.0, "x": 2}})
    assert radam.schedules.warmup_cosine_decay_schedule is WarmupCosineDecay
    assert isinstance(s, Schedule)


# ---------------------------------------------------------------- driving an optimizer


def _problem(seed=0):
    rng = np.random.default_rng(seed)
    params = [rng.standard_normal((5, 7)).astype(np.float32), rng.standard_normal(33)]
    grads = [[rng.standard_normal(p.shape).astype(p.dtype) for p in params] for _ in range(40)]
    return params, grads


@pytest.mark.parametrize("amsgrad", [False, True])
def test_schedule_matches_float_lr_set_by_hand(amsgrad):
    params, grads = _problem()
    s0 = WarmupCosineDecay(peak_value=0.05, decay_steps=30, warmup_steps=5, init_value=0.001)
    s1 = StepDecay(0.02, step_size=7, gamma=0.5)

    def groups(ps, lr0, lr1):
        return [
            {"params": [ps[0]], "lr": lr0, "amsgrad": amsgrad},
            {"params": [ps[1]], "lr": lr1, "weight_decay": 0.1, "decoupled_weight_decay": True},
        ]

    a = [p.copy() for p in params]
    b = [p.copy() for p in params]
    opt_a = radam.Adam(groups(a, s0, s1))
    opt_b = radam.Adam(groups(b, 0.0, 0.0))
    for count, g in enumerate(grads):
        assert opt_a.current_lr == [s0(count), s1(count)]
        opt_b.param_groups[0]["lr"] = s0(count)
        opt_b.param_groups[1]["lr"] = s1(count)
        opt_a.step(g)
        opt_b.step(g)
    assert_same_run(a, b, opt_a, opt_b)
    assert not np.array_equal(a[0], params[0])


def test_plain_callable_and_count_convention():
    seen = []

    def schedule(count):
        seen.append(count)
        return 0.1 / (1 + count)

    w = np.ones(4)
    opt = radam.Adam([w], lr=schedule)
    seen.clear()  # construction checks the value at count 0
    for _ in range(3):
        opt.step([np.ones(4)])
    assert seen == [0, 1, 2]  # once per step, with the updates already taken
    assert opt.current_lr == [0.1 / 4]


def test_schedule_position_survives_state_dict():
    params, grads = _problem(1)
    sched = ExponentialDecay(0.05, 0.8)
    straight = [p.copy() for p in params]
    opt = radam.Adam(straight, lr=sched)
    for g in grads[:20]:
        opt.step(g)

    first = [p.copy() for p in params]
    opt1 = radam.Adam(first, lr=sched)
    for g in grads[:12]:
        opt1.step(g)
    resumed = [p.copy() for p in first]
    opt2 = radam.Adam(resumed, lr=0.5)  # the saved schedule replaces this lr
    opt2.load_state_dict(opt1.state_dict())
    assert opt2.param_groups[0]["lr"] == sched
    assert opt2.current_lr == [sched(12)]
    for g in grads[12:20]:
        opt2.step(g)
    for x, y in zip(resumed, straight):
        np.testing.assert_array_equal(x, y)


@pytest.mark.parametrize(
    "bad, exc",
    [
        (-0.5, ValueError),
        (float("nan"), ValueError),
        (float("inf"), ValueError),
        ("0.1", TypeError),
        (None, TypeError),
    ],
)
def test_bad_scheduled_value_raises_and_changes_nothing(bad, exc):
    params, grads = _problem(2)

    def schedule(count):
        return 0.01 if count < 3 else bad

    opt = radam.Adam([{"params": [params[0]]}, {"params": [params[1]], "lr": schedule}])
    for g in grads[:3]:
        opt.step(g)
    before = snapshot(opt)
    with raises_named(exc, "param_groups[1]['lr']", "step count 3"):
        opt.step(grads[3])
    assert_unchanged(opt, before)
    with raises_named(exc, "param_groups[1]['lr']"):
        opt.current_lr  # noqa: B018
    opt.param_groups[1]["lr"] = 0.01  # the optimizer keeps working
    opt.step(grads[3])
    assert opt.step_count == 4


def test_schedule_that_raises_is_named():
    def schedule(count):
        if count >= 2:
            raise ZeroDivisionError("boom")
        return 0.1

    opt = radam.Adam([np.ones(3)], lr=schedule)
    opt.step([np.ones(3)])
    opt.step([np.ones(3)])
    before = snapshot(opt)
    with raises_named(ValueError, "param_groups[0]['lr']", "ZeroDivisionError", "boom"):
        opt.step([np.ones(3)])
    assert_unchanged(opt, before)


def test_bad_schedule_at_construction():
    with raises_named(ValueError, "lr", "returned -1.0"):
        radam.Adam([np.ones(3)], lr=lambda count: -1.0)
    with raises_named(TypeError, "params[1]['lr']"):
        radam.Adam([{"params": [np.ones(2)]}, {"params": [np.ones(2)], "lr": lambda c: "x"}])


def test_repr_shows_the_schedule():
    opt = radam.Adam([np.ones(3)], lr=StepDecay(0.1, 10))
    assert "lr=StepDecay(init_value=0.1, step_size=10, gamma=0.1)" in repr(opt)
