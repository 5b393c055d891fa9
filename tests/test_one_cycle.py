"""The one-cycle policy (radam.schedules.OneCycle) and a beta1 schedule in betas[0].

References: torch's OneCycleLR written out from its documented formulas (a
torch-free transcription below), Adam with the bias correction 1 - beta1_t^t
from the current beta1 (as torch computes it), and, where torch is installed,
torch.optim.Adam driven by OneCycleLR itself.
"""

from __future__ import annotations

import json
import math
import zipfile

import numpy as np
import pytest
import radam
from helpers import assert_unchanged, f64_tolerance, raises_named, snapshot
from radam.checkpoint import CheckpointError
from radam.schedules import OneCycle, OneCycleMomentum, from_config

TORCH_REASON = (
    "torch is not installed here (it is never a dependency of radam); this test runs "
    "in an environment with torch"
)

# ---------------------------------------------------------------- the references


def anneal(strategy, start, end, pct):
    """torch's _annealing_cos / _annealing_linear: from start (pct 0) to end (pct 1)."""
    if strategy == "cos":
        return end + (start - end) / 2.0 * (math.cos(math.pi * pct) + 1)
    return (end - start) * pct + start


def reference_one_cycle(count, max_lr, total_steps, pct_start=0.3, div_factor=25.0,
                        final_div_factor=1e4, anneal_strategy="cos", three_phase=False,
                        base_momentum=0.85, max_momentum=0.95):  # fmt: skip
    """(lr, beta1) of the update after ``count`` updates under torch's OneCycleLR:
    phases end at pct_start*T - 1, (2*pct_start*T - 2,) T - 1; each anneals from
    its start value to its end value with pct = (count - start) / (end - start);
    the lr goes initial -> max -> min (initial -> max -> initial -> min with three
    phases), beta1 the other way, max -> base -> max (-> max)."""
    initial = max_lr / div_factor
    minimum = initial / final_div_factor
    if three_phase:
        phases = [
            (float(pct_start * total_steps) - 1, initial, max_lr, max_momentum, base_momentum),
            (float(2 * pct_start * total_steps) - 2, max_lr, initial, base_momentum, max_momentum),
            (total_steps - 1, initial, minimum, max_momentum, max_momentum),
        ]
    else:
        phases = [
            (float(pct_start * total_steps) - 1, initial, max_lr, max_momentum, base_momentum),
            (total_steps - 1, max_lr, minimum, base_momentum, max_momentum),
        ]
    start = 0.0
    for i, (end, lr0, lr1, m0, m1) in enumerate(phases):
        if count <= end or i == len(phases) - 1:
            pct = (count - start) / (end - start)
            return (
                anneal(anneal_strategy, lr0, lr1, pct),
                anneal(anneal_strategy, m0, m1, pct),
            )
        start = end
    raise AssertionError("unreachable")


class ReferenceAdam:
    """torch.optim.Adam's update in NumPy (float64), lr and beta1 given per step:
    m += (1 - beta1) (g - m); v = beta2 v + (1 - beta2) g^2;
    p -= lr / (1 - beta1^t) * m / (sqrt(v) / sqrt(1 - beta2^t) + eps),
    the bias correction taking the power of the current beta1."""

    def __init__(self, params, beta2=0.999, eps=1e-8, weight_decay=0.0):
        self.p = [np.array(p, dtype=np.float64) for p in params]
        self.m = [np.zeros_like(p) for p in self.p]
        self.v = [np.zeros_like(p) for p in self.p]
        self.beta2, self.eps, self.weight_decay, self.t = beta2, eps, weight_decay, 0

    def step(self, grads, lr, beta1, bias_beta1=None):
        """One update; ``bias_beta1`` replaces beta1 in the bias correction only
        (to show that the choice matters)."""
        self.t += 1
        bias_beta1 = beta1 if bias_beta1 is None else bias_beta1
        for p, g, m, v in zip(self.p, grads, self.m, self.v):
            g = g + self.weight_decay * p
            m += (1 - beta1) * (g - m)
            v *= self.beta2
            v += (1 - self.beta2) * g * g
            denom = np.sqrt(v) / math.sqrt(1 - self.beta2**self.t) + self.eps
            p -= lr / (1 - bias_beta1**self.t) * m / denom


SHAPES = [(4, 5), (7,), ()]


def _problem(steps, seed=0):
    rng = np.random.default_rng(seed)
    params = [rng.standard_normal(s) for s in SHAPES]
    grads = [[rng.standard_normal(s) for s in SHAPES] for _ in range(steps)]
    return params, grads


CYCLES = [
    {},
    {"pct_start": 0.25, "anneal_strategy": "linear"},
    {"three_phase": True},
    {"three_phase": True, "anneal_strategy": "linear", "pct_start": 0.4, "div_factor": 10.0},
    {"pct_start": 0.0},
    {"pct_start": 1.0, "final_div_factor": 100.0},
]


# ---------------------------------------------------------------- values


@pytest.mark.parametrize("cycle", CYCLES)
@pytest.mark.parametrize("total", [1, 2, 7, 300, 1001])
def test_values_are_torchs_formulas_to_the_bit(cycle, total):
    if cycle.get("pct_start", 0.3) * total == 1:  # torch: 0/0 at count 0
        with raises_named(ValueError, "pct_start"):
            OneCycle(0.1, total, **cycle)
        return
    oc = OneCycle(0.1, total, **cycle)
    mom = oc.momentum()
    shape = {k: v for k, v in cycle.items() if k in ("pct_start", "anneal_strategy", "three_phase")}
    assert mom == OneCycleMomentum(total, **shape)
    for count in range(total):
        lr, beta1 = reference_one_cycle(count, 0.1, total, **cycle)
        assert oc(count) == lr and mom(count) == beta1
        assert type(oc(count)) is float


def test_shape_of_the_default_cycle():
    oc = OneCycle(peak_value=0.1, transition_steps=101)  # warm-up ends at count 0.3*101-1 = 29.3
    mom = oc.momentum(base=0.8, peak=0.9)
    assert oc(0) == pytest.approx(0.1 / 25, rel=1e-15) and mom(0) == 0.9
    lrs = [oc(c) for c in range(101)]
    peak = int(np.argmax(lrs))
    assert peak in (29, 30) and max(lrs) == pytest.approx(0.1, rel=1e-3)
    assert all(np.diff(lrs[: peak + 1]) > 0) and all(np.diff(lrs[peak:]) < 0)
    assert oc(100) == pytest.approx(0.1 / 25 / 1e4, rel=1e-12)  # the last update of the cycle
    assert mom(100) == pytest.approx(0.9, rel=1e-12)
    betas = [mom(c) for c in range(101)]
    assert int(np.argmin(betas)) == peak and min(betas) == pytest.approx(0.8, rel=1e-3)
    three = OneCycle(0.1, 101, three_phase=True)
    # three phases: back to the start value at 2 * pct_start * T - 2, then down to the end
    assert three(59) == pytest.approx(0.1 / 25, rel=1e-2)
    assert three(100) == pytest.approx(0.1 / 25 / 1e4, rel=1e-12)
    assert three.momentum()(80) == 0.95


def test_past_the_cycle_is_an_error():
    """The cycle is counts 0 to transition_steps - 1; torch's OneCycleLR also
    refuses to go on (one update later, after extrapolating once)."""
    oc = OneCycle(0.1, 5)
    oc(4)
    oc.momentum()(4)
    for schedule in (oc, oc.momentum()):
        with raises_named(ValueError, "step count 5", "past the cycle", "transition_steps=5"):
            schedule(5)
        with raises_named(ValueError, "past the cycle"):
            schedule(10**9)


@pytest.mark.parametrize(
    "make, name",
    [
        (lambda: OneCycle(-1.0, 10), "peak_value"),
        (lambda: OneCycle(float("inf"), 10), "peak_value"),
        (lambda: OneCycle(0.1, 0), "transition_steps"),
        (lambda: OneCycle(0.1, 2.5), "transition_steps"),
        (lambda: OneCycle(0.1, 10, pct_start=1.5), "pct_start"),
        (lambda: OneCycle(0.1, 10, pct_start=-0.1), "pct_start"),
        (lambda: OneCycle(0.1, 10, pct_start=0.1), "pct_start"),  # torch: 0/0 at count 0
        (lambda: OneCycle(0.1, 10, div_factor=0), "div_factor"),
        (lambda: OneCycle(0.1, 10, final_div_factor=float("nan")), "final_div_factor"),
        (lambda: OneCycle(0.1, 10, anneal_strategy="exp"), "anneal_strategy"),
        (lambda: OneCycle(0.1, 10, three_phase=1), "three_phase"),
        (lambda: OneCycle(0.1, 10).momentum(base=1.0), "base"),
        (lambda: OneCycle(0.1, 10).momentum(peak=-0.1), "peak"),
        (lambda: OneCycleMomentum(10, peak=float("nan")), "peak"),
    ],
)
def test_bad_arguments_name_themselves(make, name):
    with raises_named((TypeError, ValueError), name):
        make()


def test_repr_equality_and_config():
    oc = OneCycle(1e-2, 300, three_phase=True)
    assert repr(oc) == (
        "OneCycle(peak_value=0.01, transition_steps=300, pct_start=0.3, div_factor=25.0, "
        "final_div_factor=10000.0, anneal_strategy='cos', three_phase=True)"
    )
    assert oc == OneCycle(1e-2, 300, 0.3, 25, 1e4, "cos", True) and oc != OneCycle(1e-2, 300)
    mom = oc.momentum(0.8, 0.9)
    assert repr(mom) == (
        "OneCycleMomentum(transition_steps=300, pct_start=0.3, anneal_strategy='cos', "
        "three_phase=True, base=0.8, peak=0.9)"
    )
    for sched in (oc, mom):
        rebuilt = from_config(json.loads(json.dumps(sched.config())))
        assert rebuilt == sched and hash(rebuilt) == hash(sched)
        assert [rebuilt(c) for c in range(300)] == [sched(c) for c in range(300)]


# ---------------------------------------------------------------- Adam on the cycle


def _radam_run(params, grads, peak, total, cycle, weight_decay=0.0):
    oc = OneCycle(peak, total, **cycle)
    groups = [
        {"params": params[:2]},
        {"params": params[2:], "weight_decay": weight_decay},
    ]
    opt = radam.Adam(groups, lr=oc, betas=(oc.momentum(), 0.999))
    seen = []
    for g in grads:
        seen.append((opt.current_lr, opt.current_betas))
        opt.step(g)
    return opt, seen


@pytest.mark.parametrize("cycle", CYCLES[:4])
def test_adam_on_the_cycle_matches_its_reference(cycle):
    """300 steps of radam.Adam(lr=oc, betas=(oc.momentum(), 0.999)) against the
    NumPy transcription of torch's Adam and OneCycleLR: 1e-12 in float64."""
    params, grads = _problem(300)
    ref = [ReferenceAdam(params[:2]), ReferenceAdam(params[2:], weight_decay=0.1)]
    ours = [p.copy() for p in params]
    opt, seen = _radam_run(ours, grads, 1e-2, 300, cycle, weight_decay=0.1)
    for count, g in enumerate(grads):
        lr, beta1 = reference_one_cycle(count, 1e-2, 300, **cycle)
        assert seen[count] == ([lr, lr], [(beta1, 0.999), (beta1, 0.999)])
        ref[0].step(g[:2], lr, beta1)
        ref[1].step(g[2:], lr, beta1)
    for got, want in zip(ours, ref[0].p + ref[1].p):
        np.testing.assert_allclose(got, want, **f64_tolerance(want))
    for i, (m, v) in enumerate(zip(ref[0].m + ref[1].m, ref[0].v + ref[1].v)):
        np.testing.assert_allclose(opt.state[i]["exp_avg"], m, **f64_tolerance(m))
        np.testing.assert_allclose(opt.state[i]["exp_avg_sq"], v, **f64_tolerance(v))


def test_bias_correction_takes_the_current_beta1():
    """With beta1 changing each step, the bias correction 1 - beta1_t^t uses the
    current beta1 (torch's choice): radam matches that reference, and not the
    one that keeps the first beta1 in the correction (a visible difference)."""
    params, grads = _problem(50)
    ours = [p.copy() for p in params]
    oc = OneCycle(1e-2, 50)
    opt = radam.Adam(ours, lr=oc, betas=(oc.momentum(), 0.999))
    current, first = ReferenceAdam(params), ReferenceAdam(params)
    for count, g in enumerate(grads):
        opt.step(g)
        lr, beta1 = reference_one_cycle(count, 1e-2, 50)
        current.step(g, lr, beta1)
        first.step(g, lr, beta1, bias_beta1=reference_one_cycle(0, 1e-2, 50)[1])
    for got, want, other in zip(ours, current.p, first.p):
        np.testing.assert_allclose(got, want, **f64_tolerance(want))
        assert np.max(np.abs(got - other)) > 1e-5


def test_with_real_torch():
    """torch.optim.Adam with OneCycleLR(max_lr, total_steps, cycle_momentum=True,
    base_momentum=0.85, max_momentum=0.95) against radam.Adam(lr=oc,
    betas=(oc.momentum(), 0.999)): 300 steps, float64, 1e-12; and the lr and
    beta1 of every step equal to the bit."""
    torch = pytest.importorskip("torch", reason=TORCH_REASON)
    for cycle in CYCLES[:4]:
        params, grads = _problem(300, seed=3)
        tparams = [torch.tensor(p.copy(), requires_grad=True) for p in params]
        topt = torch.optim.Adam(
            [{"params": tparams[:2]}, {"params": tparams[2:], "weight_decay": 0.1}], lr=1.0
        )
        sched = torch.optim.lr_scheduler.OneCycleLR(
            topt, max_lr=1e-2, total_steps=300, cycle_momentum=True,
            base_momentum=0.85, max_momentum=0.95, **cycle,  # the same names in torch
        )  # fmt: skip
        torch_seen = []
        for g in grads:
            torch_seen.append(
                ([x["lr"] for x in topt.param_groups], [x["betas"] for x in topt.param_groups])
            )
            for p, gi in zip(tparams, g):
                p.grad = torch.from_numpy(gi.copy())
            topt.step()
            sched.step()
        ours = [p.copy() for p in params]
        opt, seen = _radam_run(ours, grads, 1e-2, 300, cycle, weight_decay=0.1)
        assert seen == [(lrs, [tuple(b) for b in betas]) for lrs, betas in torch_seen]
        for got, tp in zip(ours, tparams):
            want = tp.detach().numpy()
            np.testing.assert_allclose(got, want, **f64_tolerance(want))
        tstate = topt.state_dict()["state"]
        for i in range(len(ours)):
            for name in ("exp_avg", "exp_avg_sq"):
                want = tstate[i][name].numpy()
                np.testing.assert_allclose(opt.state[i][name], want, **f64_tolerance(want))


# ---------------------------------------------------------------- the optimizer around it


def test_past_the_cycle_a_step_fails_and_changes_nothing():
    params, grads = _problem(6)
    oc = OneCycle(1e-2, 5)
    opt = radam.Adam(params, lr=oc, betas=(oc.momentum(), 0.999))
    for g in grads[:5]:
        opt.step(g)
    before = snapshot(opt)
    with raises_named(ValueError, "param_groups[0]['lr']", "past the cycle"):
        opt.step(grads[5])
    assert_unchanged(opt, before)
    # No next step: current_lr and current_betas give the last step's values.
    assert opt.current_lr == opt.last_lr == [oc(4)]
    assert opt.current_betas == opt.last_betas == [(oc.momentum()(4), 0.999)]
    opt.param_groups[0]["lr"] = 1e-5
    assert opt.current_lr == [1e-5] and opt.last_lr == [oc(4)]
    assert opt.current_betas == [(oc.momentum()(4), 0.999)]
    with raises_named(ValueError, "param_groups[0]['betas'][0]", "past the cycle"):
        opt.step(grads[5])
    assert_unchanged(opt, {**before, "groups": snapshot(opt)["groups"]})
    opt.param_groups[0]["betas"] = (0.95, 0.999)  # numbers again: it goes on
    opt.step(grads[5])
    assert opt.step_count == 6 and opt.current_betas == [(0.95, 0.999)]
    assert opt.last_lr == [1e-5] and opt.last_betas == [(0.95, 0.999)]


@pytest.mark.parametrize("device", ["cpu", "gpu"])
def test_logging_the_lr_after_every_step_of_a_full_cycle(device, request):
    # Before: reading opt.current_lr after the cycle's last step raised
    # "ValueError: step count 5 is past the cycle"; torch's get_last_lr() works there.
    if device == "gpu":
        request.getfixturevalue("adapter")
    params, grads = _problem(5)
    params = [p.astype(np.float32) for p in params]
    oc = OneCycle(1e-2, 5)
    mom = oc.momentum()
    opt = radam.Adam(params, lr=oc, betas=(mom, 0.999), device=device)
    assert opt.last_lr == opt.current_lr == [oc(0)]  # torch's get_last_lr before a step
    logged = []
    for g in grads:
        opt.step([x.astype(np.float32) for x in g])
        logged.append((opt.last_lr, opt.last_betas, opt.current_lr, opt.current_betas))
    for count, (last, last_betas, current, current_betas) in enumerate(logged):
        assert last == [oc(count)] and last_betas == [(mom(count), 0.999)]
        nxt = min(count + 1, 4)  # after the last step, the last step's values
        assert current == [oc(nxt)] and current_betas == [(mom(nxt), 0.999)]


def test_last_lr_after_a_load_is_the_schedules_at_the_last_count(tmp_path):
    params, grads = _problem(3)
    oc = OneCycle(1e-2, 10)
    opt = radam.Adam(params, lr=oc)
    for g in grads:
        opt.step(g)
    opt.save(tmp_path / "opt.ckpt")
    fresh = radam.Adam([np.zeros_like(p) for p in params], lr=oc)
    fresh.load(tmp_path / "opt.ckpt")
    assert fresh.last_lr == opt.last_lr == [oc(2)]
    fresh.load_state_dict(opt.state_dict())
    assert fresh.last_lr == [oc(2)] and fresh.current_lr == [oc(3)]
    fresh.step(grads[0])
    assert fresh.last_lr == [oc(3)]
    # A failed step leaves the last step's values.
    fresh.param_groups[0]["eps"] = -1.0
    with pytest.raises(ValueError):
        fresh.step(grads[1])
    assert fresh.last_lr == [oc(3)]


def test_a_schedule_failing_otherwise_still_raises_from_current_lr():
    params, grads = _problem(2)

    def broken(count):
        if count >= 1:
            raise RuntimeError("boom")
        return 1e-3

    opt = radam.Adam(params, lr=broken)
    opt.step(grads[0])
    with raises_named(ValueError, "param_groups[0]['lr']", "boom"):
        opt.current_lr  # noqa: B018


@pytest.mark.parametrize(
    "bad, exc, words",
    [
        (1.0, ValueError, ["betas[0]", "[0, 1)", "from the schedule", "step count 3"]),
        (float("nan"), ValueError, ["betas[0]", "from the schedule"]),
        (-0.5, ValueError, ["betas[0]", "from the schedule"]),
        ("0.9", TypeError, ["param_groups[1]['betas'][0]", "step count 3"]),
    ],
)
def test_bad_beta1_from_a_schedule_changes_nothing(bad, exc, words):
    params, grads = _problem(4)

    def beta1(count):
        return 0.9 if count < 3 else bad

    opt = radam.Adam([{"params": params[:2]}, {"params": params[2:], "betas": (beta1, 0.99)}])
    for g in grads[:3]:
        opt.step(g)
    before = snapshot(opt)
    with raises_named(exc, "param_groups[1]", *words):
        opt.step(grads[3])
    assert_unchanged(opt, before)
    with raises_named(exc, *words):
        opt.current_betas  # noqa: B018


def test_a_beta1_schedule_that_raises_is_named():
    def beta1(count):
        raise ZeroDivisionError("boom")

    with raises_named(ValueError, "betas[0]", "ZeroDivisionError", "boom"):
        radam.Adam([np.ones(3)], betas=(beta1, 0.999))
    with raises_named(TypeError, "betas[1]"):
        radam.Adam([np.ones(3)], betas=(0.9, OneCycle(1e-2, 10).momentum()))


def test_group_betas_schedule_matches_betas_set_by_hand():
    """A group's betas (schedule, float) drive the steps exactly as the same
    floats set by hand before each step; the other group keeps its own."""
    params, grads = _problem(40, seed=5)
    mom = OneCycleMomentum(40, pct_start=0.2, base=0.7, peak=0.9)
    a = [p.copy() for p in params]
    b = [p.copy() for p in params]
    opt_a = radam.Adam([{"params": a[:2], "betas": (mom, 0.99)}, {"params": a[2:]}], lr=1e-2)
    opt_b = radam.Adam([{"params": b[:2], "betas": (0.5, 0.99)}, {"params": b[2:]}], lr=1e-2)
    for count, g in enumerate(grads):
        assert opt_a.current_betas == [(mom(count), 0.99), (0.9, 0.999)]
        opt_b.param_groups[0]["betas"] = (mom(count), 0.99)
        opt_a.step(g)
        opt_b.step(g)
    for x, y in zip(a, b):
        np.testing.assert_array_equal(x, y)


def _cycle_opt(params, peak=1e-2, total=60):
    oc = OneCycle(peak, total, three_phase=True)
    return radam.Adam(params, lr=oc, betas=(oc.momentum(0.8, 0.95), 0.99)), oc


def _straight_and_stopped(seed, stop):
    """One cycle run straight through its 60 steps, and the same run stopped
    after ``stop``: (grads, the straight run's params, the stopped optimizer,
    the params it started from, the schedule)."""
    params, grads = _problem(60, seed=seed)
    straight = [p.copy() for p in params]
    opt, oc = _cycle_opt(straight)
    for g in grads:
        opt.step(g)
    stopped, _ = _cycle_opt([p.copy() for p in params])
    for g in grads[:stop]:
        stopped.step(g)
    return grads, straight, stopped, params, oc


def _steps_as_straight(resumed_opt, grads, resumed, straight):
    """``resumed_opt`` steps the rest of the ``grads`` into ``resumed``, which
    ends bit for bit as the straight run's params."""
    for g in grads:
        resumed_opt.step(g)
    for x, y in zip(resumed, straight):
        np.testing.assert_array_equal(x, y)


def test_state_dict_keeps_the_beta1_schedule():
    grads, straight, opt1, params, oc = _straight_and_stopped(6, 25)
    sd = opt1.state_dict()
    assert sd["param_groups"][0]["betas"] == (oc.momentum(0.8, 0.95), 0.99)
    resumed = [np.array(p, copy=True) for g in opt1.param_groups for p in g["params"]]
    opt2 = radam.Adam(resumed, lr=0.5, betas=(0.9, 0.999))  # the saved options win
    opt2.load_state_dict(sd)
    assert opt2.current_lr == [oc(25)]
    assert opt2.current_betas == [(oc.momentum(0.8, 0.95)(25), 0.99)]
    _steps_as_straight(opt2, grads[25:], resumed, straight)


def test_checkpoint_keeps_the_beta1_schedule(tmp_path):
    grads, straight, opt1, params, oc = _straight_and_stopped(7, 33)
    path = tmp_path / "cycle.radam"
    opt1.save(path)
    with zipfile.ZipFile(path) as zf:
        options = json.loads(zf.read("meta.json"))["param_groups"][0]["options"]
    assert options["lr"] == {"schedule": oc.config()}
    assert options["betas"] == [{"schedule": oc.momentum(0.8, 0.95).config()}, 0.99]

    resumed = [np.zeros_like(p) for p in params]
    opt2 = radam.Adam(resumed, lr=1e-3)
    opt2.load(path)
    assert opt2.param_groups[0]["betas"] == (oc.momentum(0.8, 0.95), 0.99)
    assert opt2.current_betas == [(oc.momentum(0.8, 0.95)(33), 0.99)]
    _steps_as_straight(opt2, grads[33:], resumed, straight)


def test_checkpoint_with_a_custom_beta1_callable(tmp_path):
    def beta1(count):
        return 0.9 - 0.1 * math.exp(-count)

    params, grads = _problem(4, seed=8)
    opt = radam.Adam(params, betas=(beta1, 0.999))
    opt.step(grads[0])
    path = tmp_path / "custom.radam"
    opt.save(path)
    victim = radam.Adam([p.copy() for p in params], betas=(0.9, 0.999))
    before = snapshot(victim)
    with raises_named(CheckpointError, "param_groups[0]['betas'][0]", "custom callable"):
        victim.load(path)
    assert_unchanged(victim, before)
    other = radam.Adam([p.copy() for p in params], betas=(beta1, 0.999))
    other.load(path)
    assert other.param_groups[0]["betas"][0] is beta1 and other.step_count == 1


def test_a_schedule_in_betas_1_is_refused():
    """Only betas[0] may be a schedule, in a state_dict too."""
    params, _ = _problem(1)
    opt = radam.Adam(params)
    sd = opt.state_dict()
    sd["param_groups"][0]["betas"] = (0.9, OneCycleMomentum(10))
    with raises_named(TypeError, "betas[1]"):
        radam.Adam([p.copy() for p in params]).load_state_dict(sd)


@pytest.mark.usefixtures("adapter")
def test_the_gpu_path_follows_the_cycle():
    """device="gpu" takes the scheduled lr and beta1 each step as the CPU does
    (float32; the GPU kernel differs by an unfused fma per step, so 1e-6
    relative over 100 steps, as the GPU suite's bound)."""
    rng = np.random.default_rng(9)
    p0 = [rng.standard_normal(s).astype(np.float32) for s in [(64,), (8, 8)]]
    grads = [[rng.standard_normal(p.shape).astype(np.float32) for p in p0] for _ in range(100)]
    results = []
    for device in ("cpu", "gpu"):
        params = [p.copy() for p in p0]
        oc = OneCycle(1e-2, 100, three_phase=True)
        opt = radam.Adam(params, lr=oc, betas=(oc.momentum(), 0.999), device=device)
        for g in grads:
            opt.step(g)
        opt.sync()
        results.append(params)
    for cpu, dev in zip(*results):
        np.testing.assert_allclose(dev, cpu, rtol=1e-6, atol=1e-6 * float(np.max(np.abs(cpu))))
