"""radam.compat.downhill: downhill's Adam formulas (against docs/formulas.md references)
and its training driver (validation schedule, patience, restore-best, monitors)."""

from __future__ import annotations

import numpy as np
import pytest
import radam
from radam.compat import downhill
from radam.compat.downhill import Adam, Dataset
from seed_reference import SeedAdam, halflife_beta

TARGETS = {"w": np.linspace(8.0, 9.0, 6).reshape(2, 3), "b": np.array([7.5, 8.5])}


def quadratic_loss(params, *batch):
    """0.5*|theta - target|^2 (the batch is ignored): the gradient is theta - target,
    large and of constant sign along the run, so a relative comparison is stable."""
    if isinstance(params, dict):
        diff = {k: params[k] - TARGETS[k] for k in params}
        return 0.5 * sum(float((d * d).sum()) for d in diff.values()), diff
    diff = [p - t for p, t in zip(params, TARGETS.values())]
    return 0.5 * sum(float((d * d).sum()) for d in diff), diff


def fresh_params():
    return {"w": np.linspace(1.0, 2.0, 6).reshape(2, 3), "b": np.array([1.5, 2.5])}


# One batch of the default batch_size (32): one iteration is one update, so that
# max_updates=N (which counts iterations, as in downhill) gives N updates.
DATA = [np.arange(32.0)]


def trajectory(opt, steps, **hyper):
    """Params after each of ``steps`` updates, read while iterating."""
    seen = []
    for _ in opt.iterate(DATA, max_updates=steps, validate_every=10**9, **hyper):
        seen.append({k: v.copy() for k, v in opt.params.items()})
    return seen


def reference_trajectory(steps, **options):
    params = fresh_params()
    ref = SeedAdam(list(params.values()), **options)
    seen = []
    for _ in range(steps):
        grads = [p - t for p, t in zip(ref.params, TARGETS.values())]
        ref.step(grads)
        seen.append({k: p.copy() for k, p in zip(params, ref.params)})
    return seen


def assert_same(seen, expected):
    assert len(seen) == len(expected)
    for a, e in zip(seen, expected):
        for k in a:
            np.testing.assert_allclose(a[k], e[k], rtol=1e-12, atol=0)


# -- the formulas -----------------------------------------------------------------------------


def test_master_is_algorithm1_with_halflife_betas():
    opt = Adam(quadratic_loss, fresh_params())
    seen = trajectory(opt, 200, learning_rate=1e-2)
    expected = reference_trajectory(
        200, lr=1e-2, betas=(halflife_beta(7), halflife_beta(69)), eps=1e-8
    )
    assert_same(seen, expected)
    assert opt.optimizer.param_groups[0]["betas"] == (halflife_beta(7), halflife_beta(69))


def test_halflife_keywords_are_honoured():
    opt = Adam(quadratic_loss, fresh_params())
    seen = trajectory(
        opt, 200, learning_rate=3e-3, beta1_halflife=2, beta2_halflife=10, rms_regularizer=1e-3
    )
    expected = reference_trajectory(
        200, lr=3e-3, betas=(halflife_beta(2), halflife_beta(10)), eps=1e-3
    )
    assert_same(seen, expected)


@pytest.mark.parametrize("decay", [None, 0.98])
def test_downhill_040_formula_with_lambda(decay):
    opt = Adam(quadratic_loss, fresh_params(), formula="0.4.0")
    hyper = {"learning_rate": 1e-2} | ({} if decay is None else {"beta1_decay": decay})
    seen = trajectory(opt, 200, **hyper)
    expected = reference_trajectory(
        200,
        lr=1e-2,
        betas=(halflife_beta(7), halflife_beta(69)),
        beta1_decay=1 - 1e-6 if decay is None else decay,
        bias_correction="downhill-0.4.0",
    )
    assert_same(seen, expected)


def test_the_two_formulas_differ():
    a = trajectory(Adam(quadratic_loss, fresh_params()), 20, learning_rate=1e-2)
    b = trajectory(Adam(quadratic_loss, fresh_params(), formula="0.4.0"), 20, learning_rate=1e-2)
    assert not np.allclose(a[-1]["w"], b[-1]["w"], rtol=1e-6)


@pytest.mark.parametrize("nesterov", [False, True])
def test_momentum_and_clipping_through_the_driver(nesterov):
    opt = Adam(quadratic_loss, fresh_params())
    hyper = dict(learning_rate=1e-3, momentum=0.9, nesterov=nesterov, max_gradient_norm=3.0)
    seen = trajectory(opt, 200, **hyper)
    expected = reference_trajectory(
        200,
        lr=1e-3,
        betas=(halflife_beta(7), halflife_beta(69)),
        momentum=0.9,
        nesterov=nesterov,
        max_gradient_norm=3.0,
    )
    assert_same(seen, expected)


def test_element_clipping_through_the_driver():
    opt = Adam(quadratic_loss, fresh_params(), formula="0.4.0")
    seen = trajectory(opt, 200, learning_rate=1e-3, max_gradient_elem=2.0, max_gradient_norm=1.0)
    expected = reference_trajectory(
        200,
        lr=1e-3,
        betas=(halflife_beta(7), halflife_beta(69)),
        beta1_decay=1 - 1e-6,
        bias_correction="downhill-0.4.0",
        max_gradient_elem=2.0,
        max_gradient_norm=1.0,
    )
    assert_same(seen, expected)


def test_list_params():
    params = list(fresh_params().values())
    opt = Adam(quadratic_loss, params)
    for _ in opt.iterate(DATA, max_updates=50, validate_every=10**9, learning_rate=1e-2):
        pass
    # restore-best: the only validation was before the first update
    np.testing.assert_array_equal(params[0], fresh_params()["w"])
    assert opt.updates == 50


# -- the driver -------------------------------------------------------------------------------


class Scripted:
    """A loss whose value on the validation set follows a script, while training
    moves the params a little each update; counts validations."""

    def __init__(self, script):
        self.script = list(script)
        self.validations = []  # updates made when each validation ran
        self.opt = None

    def __call__(self, params, x):
        grads = {k: np.ones_like(v) for k, v in params.items()}
        if x[0] < 0:  # a validation batch
            self.validations.append(self.opt.updates)
            i = len(self.validations) - 1
            return self.script[min(i, len(self.script) - 1)], grads
        return 0.0, grads


VALID = [np.array([-1.0])]


def scripted(script, **kwargs):
    loss = Scripted(script)
    opt = Adam(loss, {"w": np.zeros(3)}, **kwargs)
    loss.opt = opt
    return loss, opt


def test_validation_at_zero_and_every_validate_every():
    loss, opt = scripted([10.0 - i for i in range(100)])
    out = list(opt.iterate(DATA, VALID, max_updates=10, validate_every=3, learning_rate=0.1))
    assert len(out) == 10
    assert loss.validations == [0, 3, 6, 9]
    # the valid monitors yielded are those of the latest validation
    assert [v["loss"] for _, v in out] == [10, 10, 10, 9, 9, 9, 8, 8, 8, 7]


def test_patience_stops_after_more_than_patience_failures():
    # validations: 5 (best), 4 (best), then 4, 4, 4 do not improve
    loss, opt = scripted([5.0, 4.0, 4.0, 4.0, 4.0, 4.0, 4.0])
    out = list(opt.iterate(DATA, VALID, 100, validate_every=2, patience=2, learning_rate=0.1))
    # validation 5 is the 3rd failure in a row > patience 2: stop before its update
    assert loss.validations == [0, 2, 4, 6, 8]
    assert len(out) == 8
    assert opt.best_loss == 4.0


def test_min_improvement_is_relative():
    # 10 -> 9.5 is exactly a 5% gain: not more than best*min_improvement, so no progress
    loss, opt = scripted([10.0, 9.5, 9.0, 8.0])
    list(opt.iterate(DATA, VALID, 100, validate_every=1, patience=0, min_improvement=0.05))
    assert loss.validations == [0, 1]
    assert opt.best_loss == 10.0


def test_restore_best_at_the_end():
    snapshots = []

    class Recording(Scripted):
        def __call__(self, params, x):
            if x[0] < 0:
                snapshots.append(params["w"].copy())
            return super().__call__(params, x)

    loss = Recording([5.0, 3.0, 4.0, 6.0, 7.0])
    opt = Adam(loss, {"w": np.zeros(3)})
    loss.opt = opt
    list(opt.iterate(DATA, VALID, 100, validate_every=4, patience=2, learning_rate=0.1))
    assert len(snapshots) == 5
    assert not np.array_equal(snapshots[1], snapshots[4])
    np.testing.assert_array_equal(opt.params["w"], snapshots[1])  # the best, 3.0
    opt.set_params({"w": np.full(3, 7.0)})
    np.testing.assert_array_equal(opt.params["w"], np.full(3, 7.0))
    opt.set_params("best")
    np.testing.assert_array_equal(opt.params["w"], snapshots[1])
    opt.set_params({"w": np.full(3, 7.0)})
    opt.set_params()
    np.testing.assert_array_equal(opt.params["w"], snapshots[1])


def test_max_updates_and_minimize():
    _, opt = scripted([float(100 - i) for i in range(100)])
    train, valid = opt.minimize(DATA, VALID, max_updates=7, learning_rate=0.1)
    assert opt.updates == 7
    assert list(train) == ["loss"] and valid["loss"] == 100.0
    assert opt.minimize(DATA, VALID, max_updates=0) is None
    assert opt.updates == 7


def test_state_is_kept_across_iterate_calls():
    """Two calls (the first one left early) continue one trajectory: moments and the
    step count are not reset, unlike downhill's."""
    opt = Adam(quadratic_loss, fresh_params())
    seen = []
    for _ in opt.iterate(DATA, validate_every=10**9, learning_rate=1e-2):
        seen.append({k: v.copy() for k, v in opt.params.items()})
        if len(seen) == 30:
            break  # closing the generator leaves the params as they are
    seen += trajectory(opt, 30, learning_rate=1e-2)
    expected = reference_trajectory(60, lr=1e-2, betas=(halflife_beta(7), halflife_beta(69)))
    assert_same(seen, expected)
    assert opt.updates == 60


def test_step_counter_does_not_stall_past_2_24():
    opt = Adam(quadratic_loss, fresh_params())
    list(opt.iterate(DATA, max_updates=1))
    saved = opt.optimizer.state_dict()
    for entry in saved["state"].values():
        entry["step"] = 2**24 + 3
    opt.optimizer.load_state_dict(saved)
    list(opt.iterate(DATA, max_updates=2))
    assert opt.updates == 2**24 + 5


def test_monitors_pairs_dict_and_gradients():
    def mean_w(params, x):
        return float(params["w"].mean())

    def batch_mean(params, x):
        return float(np.mean(x))

    data = [np.arange(10.0)]
    for monitors in (
        [("mean_w", mean_w), ("batch", batch_mean)],
        {"mean_w": mean_w, "batch": batch_mean},
    ):
        opt = Adam(quadratic_loss, fresh_params(), monitors=monitors, monitor_gradients=True)
        result = opt.evaluate(Dataset(data, batch_size=4))
        assert list(result) == ["loss", "mean_w", "batch", "∂w", "∂b"]
        # averaged over the batches [0..3], [4..7], [8, 9] (unweighted, as downhill)
        assert result["batch"] == pytest.approx((1.5 + 5.5 + 8.5) / 3)
        loss, grads = quadratic_loss(opt.params)
        assert result["loss"] == pytest.approx(loss)
        assert result["∂w"] == pytest.approx(float((grads["w"] ** 2).sum()))
        train, valid = next(opt.iterate(data, batch_size=4, learning_rate=1e-2))
        assert list(train) == list(valid) == list(result)
        # one iteration is one pass: the train monitors are the mean over its batches
        assert train["batch"] == pytest.approx((1.5 + 5.5 + 8.5) / 3)
        assert opt.updates == 3


def test_unknown_keyword_is_an_error_before_anything_runs():
    opt = Adam(quadratic_loss, fresh_params())
    with pytest.raises(TypeError, match="learning_rat"):
        opt.iterate(DATA, learning_rat=1e-2)
    with pytest.raises(TypeError, match="beta1"):
        opt.minimize(DATA, beta1=0.9)
    assert opt.updates == 0


@pytest.mark.parametrize(
    "hyper, name",
    [
        ({"learning_rate": -1.0}, "learning_rate"),
        ({"beta1_halflife": 0}, "beta1_halflife"),
        ({"beta2_halflife": -3}, "beta2_halflife"),
        ({"momentum": 1.0}, "momentum"),
        ({"beta1_decay": 1.5}, "beta1_decay"),
        ({"patience": -1}, "patience"),
        ({"validate_every": 0}, "validate_every"),
        ({"batch_size": 1.5}, "batch_size"),
        ({"train_batches": 0}, "train_batches"),
        ({"max_gradient_norm": -1}, "max_gradient_norm"),
        ({"nesterov": "yes"}, "nesterov"),
        ({"max_updates": -2}, "max_updates"),
    ],
)
def test_bad_hyperparameter_is_named(hyper, name):
    params = fresh_params()
    opt = Adam(quadratic_loss, params)
    with pytest.raises((TypeError, ValueError), match=name):
        opt.iterate(DATA, **hyper)
    np.testing.assert_array_equal(params["w"], fresh_params()["w"])


def test_bad_constructor_arguments():
    with pytest.raises(ValueError, match="formula"):
        Adam(quadratic_loss, fresh_params(), formula="0.3")
    with pytest.raises(TypeError, match="loss"):
        Adam(None, fresh_params())
    with pytest.raises(TypeError, match="params"):
        Adam(quadratic_loss, np.zeros(3))
    with pytest.raises(ValueError, match="loss"):
        Adam(quadratic_loss, fresh_params(), monitors={"loss": lambda p, x: 0.0})
    with pytest.raises(ValueError, match="targets"):
        Adam(quadratic_loss, fresh_params()).set_params({"w": np.zeros(3), "b": np.zeros(2)})


def test_defaults_are_downhills():
    assert downhill.DEFAULTS["learning_rate"] == 1e-4
    assert downhill.DEFAULTS["beta1_halflife"] == 7
    assert downhill.DEFAULTS["beta2_halflife"] == 69
    assert downhill.DEFAULTS["rms_regularizer"] == 1e-8
    assert downhill.DEFAULTS["patience"] == 5
    assert downhill.DEFAULTS["validate_every"] == 10
    assert downhill.DEFAULTS["batch_size"] == 32
    opt = Adam(quadratic_loss, fresh_params(), formula="0.4.0")
    assert opt.hyperparams["beta1_decay"] == 1 - 1e-6
    assert downhill.halflife_to_beta(7) == radam.halflife_to_beta(7)


# -- downhill's counting and data forms ---------------------------------------------------------


class Log:
    """A least-squares loss ``loss(params, x, y)`` that logs each call: the updates
    made so far and the first sample of its batch (``kind`` tells valid data by
    its negative samples)."""

    def __init__(self):
        self.calls = []  # (updates so far, first x of the batch, batch length)
        self.opt = None

    def __call__(self, params, *batch):
        n = self.opt.updates if self.opt is not None else None
        if not batch:
            self.calls.append((n, None, 0))
        else:
            self.calls.append((n, float(batch[0].reshape(len(batch[0]), -1)[0, 0]), len(batch[0])))
        grads = {k: np.full_like(v, -0.01) for k, v in params.items()}  # w grows
        return float(np.sum(params["w"] ** 2)), grads

    def training(self):
        return [c for c in self.calls if c[1] is None or c[1] >= 0]


def logged(**kwargs):
    loss = Log()
    opt = Adam(loss, {"w": np.ones(3)}, **kwargs)
    loss.opt = opt
    return loss, opt


X12 = np.arange(12.0).reshape(12, 1) * np.ones((1, 3))
Y12 = np.arange(12.0)


def test_max_updates_counts_iterations_of_one_pass_each():
    """downhill: ``max_updates`` halts after that many iterations, one iteration
    being one pass over the training Dataset (``iteration_size`` defaults to
    the number of batches). 12 samples in batches of 4 with max_updates=2:
    2 iterations of 3 batches, 6 updates (the issue's reproduction)."""
    loss, opt = logged()
    out = list(opt.iterate([X12, Y12], batch_size=4, max_updates=2, validate_every=100))
    assert len(out) == 2
    assert opt.updates == 6
    # validation at iteration 0 (one pass over the same data), then 6 training batches,
    # each before its own update
    assert [c[0] for c in loss.calls] == [0, 0, 0] + [0, 1, 2, 3, 4, 5]
    # each pass takes every batch once, in a shuffled order of the contiguous batches
    firsts = [c[1] for c in loss.calls]
    for one_pass in (firsts[0:3], firsts[3:6], firsts[6:9]):
        assert sorted(one_pass) == [0.0, 4.0, 8.0]


def test_validate_every_and_patience_count_iterations():
    """downhill validates at iteration 0 and every ``validate_every`` iterations
    (after that many passes over the training data), and ``patience`` counts
    validations: with 3 batches per iteration and validate_every=2 the
    validations see 0, 6, 12, ... updates."""
    loss, opt = logged()
    valid = [np.full((2, 3), -1.0), np.zeros(2)]
    opt.minimize([X12, Y12], valid, max_updates=5, batch_size=4, validate_every=2)
    seen = [c[0] for c in loss.calls if c[1] is not None and c[1] < 0]
    assert seen == [0, 6, 12]
    assert opt.updates == 15

    # the grads push w up, so the loss only grows: the first validation is the best,
    # and with patience 1 the third validation (2 without improvement) stops the run
    loss, opt = logged()
    out = list(opt.iterate([X12, Y12], valid, batch_size=4, validate_every=2, patience=1))
    assert len(out) == 4 and opt.updates == 12
    assert opt.best_loss == 3.0
    np.testing.assert_array_equal(opt.params["w"], np.ones(3))  # restored: the best


def rosenbrock(params):
    """downhill's test loss: Rosenbrock in 2-d, no inputs (params only)."""
    x = params["x"]
    value = float((100 * (x[1:] - x[:-1] ** 2) ** 2 + (1 - x[:-1]) ** 2).sum())
    grad = np.array([-400 * x[0] * (x[1] - x[0] ** 2) - 2 * (1 - x[0]), 200 * (x[1] - x[0] ** 2)])
    return value, {"x": grad}


def test_iterate_none_is_a_loss_without_inputs():
    """downhill's own tests optimize Rosenbrock with ``iterate(None, max_updates=3)``:
    with no data, each iteration calls the loss once with no inputs (one update)
    and a validation evaluates it once; its ``assert_progress`` helper checks that
    the second train loss is below the first validation loss and that no new
    validation happened in between."""
    monitors = [("x", lambda p: float(p["x"][:-1].sum())), ("y", lambda p: float(p["x"][1:].sum()))]
    opt = Adam(rosenbrock, {"x": np.full(2, -3.0)}, monitors=monitors)
    out = list(opt.iterate(None, max_updates=3, learning_rate=1e-2))
    assert len(out) == 3 and opt.updates == 3
    (train0, valid0), (train1, valid1), _ = out
    assert list(train0) == ["loss", "x", "y"]
    assert train0 == valid0  # the same params, the same loss, no inputs
    assert train1["loss"] < valid0["loss"] and valid1 == valid0
    assert opt.evaluate(None) == dict(
        zip(["loss", "x", "y"], [rosenbrock(opt.params)[0], *opt.params["x"]])
    )
    # minimize() with no data at all: train defaults to None, as in downhill
    opt = Adam(rosenbrock, {"x": np.full(2, -3.0)})
    opt.minimize(max_updates=4)
    assert opt.updates == 4


def test_a_list_of_batches_is_read_as_batches():
    """downhill's ``Optimizer.iterate`` takes a sequence of batches, each the list of
    the loss's inputs (its README: ``opt.iterate(train=[[y]], ...)``): every
    iteration goes through them, in order, one update each. A list of arrays
    is the other form (``downhill.minimize``/``Dataset``: parallel arrays cut
    into batches)."""
    loss, opt = logged()
    batches = [[X12[:4], Y12[:4]], [X12[4:6], Y12[4:6]], [X12[6:], Y12[6:]]]
    out = list(opt.iterate(batches, max_updates=2, validate_every=100))
    assert len(out) == 2 and opt.updates == 6
    # validation (3 batches), then 2 iterations of the 3 batches in order
    assert [c[1:] for c in loss.calls] == [(0.0, 4), (4.0, 2), (6.0, 6)] * 3
    # [[X0], [X1]]: one input per batch, each batch whole
    loss, opt = logged()
    opt.minimize([[X12[:5]], (X12[5:],)], max_updates=1, batch_size=2)
    assert [c[1:] for c in loss.training()] == [(0.0, 5), (5.0, 7)] * 2
    # [X, Y]: parallel arrays, cut into batches of batch_size
    loss, opt = logged()
    opt.minimize([X12, Y12], max_updates=1, batch_size=5)
    assert sorted(c[1:] for c in loss.calls[3:]) == [(0.0, 5), (5.0, 5), (10.0, 2)]


def test_train_batches_sets_the_iteration_size():
    """``downhill.minimize(train_batches=N)`` makes an iteration N batches (the
    Dataset's ``iteration_size``), wrapping around the data as needed."""
    loss, opt = logged()
    valid = [np.full((1, 3), -1.0), np.zeros(1)]
    out = list(
        opt.iterate(
            [X12, Y12], valid, max_updates=3, batch_size=4, train_batches=2, validate_every=100
        )
    )
    assert len(out) == 3 and opt.updates == 6
    firsts = [c[1] for c in loss.training()]
    assert sorted(firsts[:3]) == [0.0, 4.0, 8.0] and sorted(firsts[3:]) == [0.0, 4.0, 8.0]


def test_valid_defaults_to_the_training_data_itself():
    """downhill's ``iterate`` uses ``valid = train``, the same Dataset: a validation
    takes the next ``iteration_size`` batches from the training cursor."""
    loss, opt = logged()
    data = Dataset([X12, Y12], batch_size=4, iteration_size=2, rng=0)
    list(opt.iterate(data, max_updates=3, validate_every=2))
    # validation, train, train, validation, train: 2 batches each, one cursor
    assert len(loss.calls) == 10 and opt.updates == 6
    firsts = [c[1] for c in loss.calls]
    for one_pass in (firsts[0:3], firsts[3:6], firsts[6:9]):
        assert sorted(one_pass) == [0.0, 4.0, 8.0]


def test_dataset_batches_as_downhill_cuts_and_shuffles_them():
    """downhill's Dataset tests: 40 samples in batches of 11 make 4 contiguous
    batches of 11, 11, 11 and 7 samples, in an order shuffled with the seed
    (rng=4 puts the short one third); ``batch_size=0`` is one batch of all."""
    x = np.arange(40.0).reshape(40, 1)
    assert [len(b[0]) for b in Dataset([x], batch_size=11, rng=4)] == [11, 11, 7, 11]
    assert [len(b[0]) for b in Dataset([x], batch_size=0)] == [40]
    assert [len(b[0]) for b in Dataset(x, batch_size=-3)] == [40]
    for batch in Dataset([x, 2 * x], batch_size=11, rng=4):
        np.testing.assert_array_equal(batch[1], 2 * batch[0])
        np.testing.assert_array_equal(np.diff(batch[0][:, 0]), 1.0)  # contiguous


def test_dataset_iteration_size_and_reshuffling():
    """downhill's ``iteration_size`` test: 8 batches, 3 per iteration; the first
    two iterations keep the order, the third wraps around and reshuffles."""
    x = np.arange(40.0).reshape(40, 1)
    ds = Dataset([x], batch_size=5, iteration_size=3, rng=1)
    assert len(ds) == 3
    seen = [[int(b[0][0, 0]) for b in ds] for _ in range(6)]
    assert [len(s) for s in seen] == [3] * 6
    flat = [f for s in seen for f in s]
    first_pass, second_pass = flat[:8], flat[8:16]
    assert sorted(first_pass) == sorted(second_pass) == list(range(0, 40, 5))
    assert first_pass != second_pass  # reshuffled at the wrap (this seed's orders differ)


def test_dataset_from_a_callable():
    """downhill: a callable gives one batch per call; ``iteration_size`` calls per
    iteration, by default ``len(callable)``, or 100 when it has no length."""
    calls = []

    def batch():
        calls.append(1)
        return np.ones((2, 3))

    assert [len(b) for b in Dataset(batch, iteration_size=10)] == [1] * 10
    assert len(list(Dataset(batch))) == 100

    class Sized:
        called = 0

        def __call__(self):
            self.called += 1
            return [np.ones((2, 3)), np.zeros(2)]

        def __len__(self):
            return 7

    sized = Sized()
    batches = list(Dataset(sized))
    assert sized.called == 7 and all(len(b) == 2 for b in batches)
    loss, opt = logged()
    opt.minimize(sized, max_updates=2, validate_every=100)
    assert opt.updates == 14 and len(loss.calls) == 21


def test_patience_counts_across_iterate_calls():
    """downhill keeps its validation count, best validation and best loss on the
    optimizer: a second ``iterate`` goes on counting. Here the loss only grows,
    so with patience 2 the first call stops at its 4th validation (3 without
    improvement), and a second call at its first (the 5th)."""
    loss, opt = logged()
    valid = [np.full((1, 3), -1.0), np.zeros(1)]
    assert len(list(opt.iterate(X12, valid, batch_size=12, validate_every=1, patience=2))) == 3
    assert opt.best_loss == 3.0 and opt.updates == 3
    assert list(opt.iterate(X12, valid, batch_size=12, validate_every=1, patience=2)) == []
    assert opt.updates == 3
    np.testing.assert_array_equal(opt.params["w"], np.ones(3))


def test_keyboard_interrupt_stops_and_restores_the_best():
    """downhill catches a KeyboardInterrupt in a validation or an update, stops,
    and restores the best validated params."""

    def loss(params, x):
        if len(seen) == 5:
            raise KeyboardInterrupt
        seen.append(1)
        return float(np.sum(params["w"] ** 2)), {"w": -np.ones(3)}

    seen = []
    opt = Adam(loss, {"w": np.ones(3)})
    out = list(opt.iterate([np.zeros((4, 1))], batch_size=1, learning_rate=0.1))
    assert out == [] and opt.updates == 1  # validation (4 calls), one update, interrupted
    np.testing.assert_array_equal(opt.params["w"], np.ones(3))


@pytest.mark.parametrize(
    "train, hyper, exc, match",
    [
        ([], {}, ValueError, "train is empty"),
        ([X12, [X12]], {}, TypeError, "mixes arrays and lists"),
        ([[X12], X12], {}, TypeError, "mixes arrays and lists"),
        ([[X12]], {"train_batches": 2}, ValueError, "train_batches"),
        (None, {"train_batches": 2}, ValueError, "train_batches"),
        ([X12], {"valid_batches": 2}, ValueError, "valid_batches"),
        ({"x": X12}, {}, TypeError, "train"),
        ([X12, Y12[:5]], {}, ValueError, "different lengths"),
    ],
)
def test_bad_data_is_named_before_anything_runs(train, hyper, exc, match):
    loss, opt = logged()
    with pytest.raises(exc, match=match):
        opt.iterate(train, **hyper)
    assert opt.updates == 0 and loss.calls == []
