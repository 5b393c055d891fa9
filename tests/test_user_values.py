"""Options as users write them: messages show the value the user gave (not the
core's code for it), and NumPy scalars and 0-d arrays are taken wherever the
Python number they hold is, on the CPU and the GPU.

Before: ``radam.NAdam(p, bias_correction="downhill-0.4.0")`` said ``invalid
bias_correction: 1`` and ``radam.RAdam(p, amsgrad=True)`` ``invalid amsgrad:
1``; ``amsgrad=np.True_`` and ``lr=np.array(0.01)`` were TypeErrors;
``OneCycle(...)(-1)`` a TypeError; ``radam.minimize(..., jac=True)`` with a
``fun`` returning only f raised ``cannot unpack non-iterable float object``.
"""

from __future__ import annotations

import numpy as np
import pytest
import radam
from helpers import raises_named
from radam.schedules import OneCycle, StepDecay


@pytest.fixture(params=["cpu", "gpu"])
def device(request):
    """Each device; "gpu" needs a WebGPU adapter (conftest's ``adapter``)."""
    if request.param == "gpu":
        request.getfixturevalue("adapter")
    return request.param


@pytest.mark.parametrize(
    "cls, option, value, shown",
    [
        (radam.NAdam, "bias_correction", "downhill-0.4.0", "'downhill-0.4.0'"),
        (radam.RAdam, "amsgrad", True, "True"),
        (radam.Adamax, "amsgrad", 1, "1"),
        (radam.NAdam, "efficient_form", True, "True"),
        (radam.RAdam, "amsgrad", np.True_, "np.True_"),
    ],
)
def test_a_refused_flag_or_choice_shows_the_value_given(cls, option, value, shown):
    with pytest.raises(ValueError) as info:
        cls([np.zeros(3)], **{option: value})
    assert f"invalid {option}: {shown} (must be" in str(info.value)


def test_a_refused_combination_shows_the_value_given():
    with pytest.raises(ValueError) as info:
        radam.Adam([np.zeros(3)], efficient_form=True, bias_correction="downhill-0.4.0")
    assert "invalid efficient_form: True (must be False with bias_correction=" in str(info.value)


def test_the_value_shown_is_the_groups_own():
    with raises_named(ValueError, "params[1]: invalid amsgrad: 1 (must be"):
        radam.RAdam([{"params": [np.zeros(3)]}, {"params": [np.zeros(2)], "amsgrad": 1}])
    opt = radam.RAdam([np.zeros(3)])
    opt.param_groups[0]["amsgrad"] = True
    with raises_named(ValueError, "param_groups[0]: invalid amsgrad: True (must be"):
        opt.step([np.ones(3)])


# The same options as Python numbers and as NumPy scalars or 0-d arrays.
AS_PYTHON = {
    "lr": 0.01,
    "betas": (0.8, 0.99),
    "eps": 1e-6,
    "weight_decay": 0.1,
    "amsgrad": True,
    "maximize": True,
    "rounding_seed": 7,
    "grad_scale": 2.0,
}
AS_NUMPY = {
    "lr": np.array(0.01),
    "betas": np.array([0.8, 0.99]),
    "eps": np.float64(1e-6),
    "weight_decay": np.array(0.1),
    "amsgrad": np.True_,
    "maximize": np.array(True),
    "rounding_seed": np.uint64(7),
    "grad_scale": np.array(2),
}


def test_numpy_scalars_and_0d_arrays_are_taken_as_the_numbers_they_hold(device, tmp_path):
    python, numpy = AS_PYTHON, AS_NUMPY
    rng = np.random.default_rng(0)
    w0 = rng.standard_normal(8).astype(np.float32)
    grads = [rng.standard_normal(8).astype(np.float32) for _ in range(3)]
    results = []
    for options in (python, numpy):
        w = w0.copy()
        opt = radam.Adam([w], device=device, skip_nonfinite=np.True_, **options)
        for g in grads:
            opt.step([g])
        opt.sync()
        opt.save(tmp_path / "opt.ckpt")  # and they are written and read back
        radam.Adam([np.zeros(8, np.float32)], device=device).load(tmp_path / "opt.ckpt")
        assert opt.skip_nonfinite is True
        results.append(w)
    assert results[0].tobytes() == results[1].tobytes()


def test_a_numpy_bool_switch_is_taken():
    opt = radam.Adam([np.zeros(3, np.float16)], master_weights=np.True_, skip_nonfinite=np.False_)
    assert opt.master_weights is True and opt.skip_nonfinite is False


def test_a_schedule_returning_a_numpy_scalar_is_taken():
    opt = radam.Adam([np.zeros(3)], lr=lambda t: np.array(0.01))
    opt.step([np.ones(3)])
    assert opt.current_lr == [0.01]


def test_schedules_take_numpy_counts_and_arguments():
    oc = OneCycle(0.1, 10)
    assert OneCycle(np.array(0.1), np.int64(10))(np.array(3)) == oc(3)
    assert StepDecay(np.float32(0.5), np.array(2))(np.int32(4)) == StepDecay(0.5, 2)(4)


@pytest.mark.parametrize("count, exc", [(-1, ValueError), (np.int64(-3), ValueError)])
def test_a_negative_step_count_is_a_value_error(count, exc):
    with raises_named(exc, "OneCycle", "step count", ">= 0", str(int(count))):
        OneCycle(0.1, 10)(count)


@pytest.mark.parametrize("count", [1.5, "3", True, None])
def test_a_step_count_that_is_not_an_integer_is_a_type_error(count):
    with raises_named(TypeError, "OneCycle", "step count"):
        OneCycle(0.1, 10)(count)


@pytest.mark.parametrize(
    "returned, shown", [(2.0, "float 2.0"), (np.ones(3), "an array of shape (3,)"), ("ab", "str")]
)
def test_minimize_with_jac_true_and_a_fun_returning_f_only(returned, shown):
    pytest.importorskip("scipy")
    with raises_named(TypeError, "jac=True", "pair (f, g)", shown, "callable jac"):
        radam.minimize(lambda x: returned, np.ones(2), jac=True)
