"""The option table (``radam._options.OPTIONS``) walked over every class: each
class takes every option the table gives it, with the table's default, and
refuses every other one, or any value its update rule cannot use, with an
error naming the option. And what is derived from the table agrees with it:
the signatures, EngineOptions (the fields the Rust core reads), the docs, the
GPU check and the seed systems' names."""

from __future__ import annotations

import inspect

import ml_dtypes
import numpy as np
import pytest
import radam
from radam import _core, _options
from radam._options import OPTIONS, VARIANTS
from radam.compat import _aliases

# A value other than the default for every option, valid where the option applies.
EXAMPLES = {
    "lr": 0.01,
    "betas": (0.8, 0.99),
    "eps": 1e-6,
    "weight_decay": 0.05,
    "momentum_decay": 0.01,
    "decoupled_weight_decay": True,
    "amsgrad": True,
    "maximize": True,
    "device": "auto",
    "efficient_form": True,
    "beta1_decay": 0.99,
    "momentum": 0.5,
    "nesterov": True,
    "max_gradient_elem": 0.5,
    "max_gradient_norm": 1.0,
    "bias_correction": "downhill-0.4.0",
    "grad_scale": 4.0,
    "stochastic_rounding": True,
    "rounding_seed": 2**64 - 1,
    "skip_nonfinite": True,
    "state_dtype": "bfloat16",
    "master_weights": True,
}
CLASSES = {name: getattr(radam, name) for name in VARIANTS}


def _params(option: str) -> list[np.ndarray]:
    sixteen = option in ("master_weights", "stochastic_rounding")
    dtype = ml_dtypes.bfloat16 if sixteen else np.float32
    return [np.linspace(-1, 1, 6).astype(dtype), np.ones(3, dtype)]


def _grads(params: list[np.ndarray]) -> list[np.ndarray]:
    return [np.full(p.shape, 0.5, p.dtype) for p in params]


def test_the_examples_cover_the_table():
    assert set(EXAMPLES) == {o.name for o in OPTIONS}
    for o in OPTIONS:
        assert EXAMPLES[o.name] != o.default, o.name


def test_every_class_is_in_the_table():
    assert {
        c.__name__ for c in (radam.Adam, radam.AdamW, radam.Adamax, radam.NAdam, radam.RAdam)
    } == set(VARIANTS)


@pytest.mark.parametrize("option", OPTIONS, ids=lambda o: o.name)
@pytest.mark.parametrize("name", sorted(VARIANTS))
def test_each_class_takes_the_options_the_table_gives_it(name, option):
    cls, variant = CLASSES[name], VARIANTS[name]
    value = EXAMPLES[option.name]
    signature = inspect.signature(cls).parameters
    if not option.taken_by(variant.rule):
        # Not in the signature, and not a group option either.
        assert option.name not in signature
        with pytest.raises(TypeError, match=option.name):
            cls(_params(option.name), **{option.name: value})
        if option.group:
            with pytest.raises(TypeError, match=option.name):
                cls([{"params": _params(option.name), option.name: value}])
        return
    default = variant.fixed.get(option.name, variant.defaults.get(option.name, option.default))
    assert signature[option.name].default == default
    if option.name in variant.fixed or not option.applies_to(variant.rule):
        # Taken, but only with the class's value: anything else is refused by name.
        if value == default:
            value = option.default
        with pytest.raises(ValueError, match=option.name):
            cls(_params(option.name), **{option.name: value})
        return
    params = _params(option.name)
    opt = cls(params, **{option.name: value})
    if option.group:
        assert opt.param_groups[0][option.name] == value
        assert opt.defaults[option.name] == value
    elif option.name == "state_dtype":
        assert opt.state_dtype == np.dtype(ml_dtypes.bfloat16)
    elif option.name == "device":
        assert opt.device in ("cpu", "gpu")
    else:
        assert getattr(opt, option.name) == value
    before = [p.copy() for p in params]
    opt.step(_grads(params))
    assert any(not np.array_equal(a, b) for a, b in zip(params, before))


@pytest.mark.parametrize("name", sorted(VARIANTS))
def test_signatures_follow_the_table(name):
    cls, variant = CLASSES[name], VARIANTS[name]
    parameters = list(inspect.signature(cls).parameters.values())
    assert parameters[0].name == "params"
    positional = [
        o.name
        for o in OPTIONS
        if o.positional and o.applies_to(variant.rule) and o.name not in variant.fixed
    ]
    kinds = inspect.Parameter
    assert [p.name for p in parameters[1:] if p.kind is kinds.POSITIONAL_OR_KEYWORD] == positional
    taken = [o.name for o in OPTIONS if o.taken_by(variant.rule)]
    assert sorted(p.name for p in parameters[1:]) == sorted(taken)
    # The docstring lists every option with this class's default.
    for p in parameters[1:]:
        assert f"``{p.name}={p.default!r}``" in cls.__doc__, p.name
    # Positional arguments land where the signature says.
    values = [EXAMPLES[n] if n != "device" else "cpu" for n in positional[:3]]
    opt = cls([np.ones(3)], *values)
    for n, v in zip(positional, values):
        assert opt.param_groups[0][n] == v


def test_engine_options_are_the_cores_fields():
    fields = set(_options.EngineOptions._fields)
    assert fields == set(_core.CONFIG_FIELDS)
    group = {o.name for o in OPTIONS if o.group} - {"betas"}
    assert fields == group | {"beta1", "beta2", "algorithm"}
    checked = _options.engine_options({"algorithm": "nadam"}, "")
    assert checked.options.algorithm == "nadam"
    assert "algorithm: NAdam" in repr(checked.config)
    assert "momentum_decay: 0.004" in repr(checked.config)


def test_the_seed_systems_names_map_onto_options():
    assert _aliases.PUZZLELIB == {"alpha": "lr", ("beta1", "beta2"): "betas", "epsilon": "eps"}
    assert _aliases.DOWNHILL["learning_rate"] == "lr"
    assert _aliases.DOWNHILL[("beta1_halflife", "beta2_halflife")] == "betas"
    assert set(_aliases.DOWNHILL.values()) <= {o.name for o in OPTIONS if o.group}
    values = {"alpha": 1.0, "beta1": 0.5, "beta2": 0.25, "epsilon": 0.0}
    assert _aliases.from_seed(_aliases.PUZZLELIB, values.__getitem__) == {
        "lr": 1.0,
        "betas": (0.5, 0.25),
        "eps": 0.0,
    }


def test_the_seed_systems_names_are_theirs_and_radams():
    from radam.compat import downhill, puzzlelib

    def seed_names(names):
        return {n for key in names for n in (key if isinstance(key, tuple) else (key,))}

    assert seed_names(_aliases.DOWNHILL) <= set(downhill.DEFAULTS)
    assert seed_names(_aliases.PUZZLELIB) <= set(inspect.signature(puzzlelib.Adam).parameters)
    group_options = {o.name for o in OPTIONS if o.group}
    for names in (_aliases.DOWNHILL, _aliases.PUZZLELIB):
        assert set(names.values()) <= group_options
        # a pair of seed names is betas, the one option that is a pair
        assert {k for k, v in names.items() if v == "betas"} == {
            k for k in names if isinstance(k, tuple)
        }
