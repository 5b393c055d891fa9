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


DATA = [np.arange(64.0)]


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
        assert train["batch"] == pytest.approx(1.5)  # the first mini-batch, before the update


def test_datasets_wrap_around_reshuffled():
    data = Dataset([np.arange(10), np.arange(10) * 2], batch_size=4, rng=0)
    first = [data.next_batch() for _ in range(3)]
    assert [list(b[0]) for b in first] == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9]]
    second = [data.next_batch() for _ in range(3)]
    order = np.concatenate([b[0] for b in second])
    assert sorted(order) == list(range(10)) and list(order) != list(range(10))
    for x, y in second:
        np.testing.assert_array_equal(y, 2 * x)


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
        ({"batch_size": 0}, "batch_size"),
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
