"""State dicts and checkpoints written by an earlier radam still load, and the
loaded optimizer continues bit for bit as the one that wrote them did.

The files in ``tests/saved`` were written by radam before the option table,
the one-way core and the buffer record (see ``tests/saved/cases.py``): every
variant, AMSGrad, momentum with Nesterov and norm clipping, bfloat16 state,
float16 params with master weights, NAdam's carried product, and lr and
betas[0] schedules. Each records the gradient of one more step and the bytes
of the params and state that step gave there.
"""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
from saved.cases import CASES, decode_array, decode_state_dict

HERE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "saved")

with open(os.path.join(HERE, "state_dicts.json"), encoding="utf-8") as _f:
    SAVED = json.load(_f)


def _fresh(name: str, params: list[np.ndarray]):
    cls, options, _, _, _ = CASES[name]
    return cls(params, **options)


def _assert_continues(name: str, opt, params: list[np.ndarray]) -> None:
    record = SAVED[name]
    opt.step([decode_array(g) for g in record["grads"]])
    for i, (p, want) in enumerate(zip(params, record["params_after"])):
        assert p.tobytes() == decode_array(want).tobytes(), f"{name}: params[{i}]"
    state = opt.state_dict()["state"]
    assert set(state) == {int(i) for i in record["state_after"]}
    for i, entry in record["state_after"].items():
        assert set(k for k, v in state[int(i)].items() if hasattr(v, "dtype")) == set(entry)
        for key, want in entry.items():
            got = state[int(i)][key]
            assert got.dtype == decode_array(want).dtype, f"{name}: state[{i}][{key!r}]"
            assert got.tobytes() == decode_array(want).tobytes(), f"{name}: state[{i}][{key!r}]"


def test_every_case_has_its_files():
    assert set(SAVED) == set(CASES)
    for name in CASES:
        assert os.path.isfile(os.path.join(HERE, f"{name}.ckpt")), name


@pytest.mark.parametrize("name", sorted(CASES))
def test_saved_state_dict_loads_and_continues(name):
    record = SAVED[name]
    params = [decode_array(p) for p in record["params"]]
    opt = _fresh(name, params)
    opt.load_state_dict(decode_state_dict(record["state_dict"]))
    _assert_continues(name, opt, params)


@pytest.mark.parametrize("name", sorted(CASES))
def test_saved_checkpoint_loads_and_continues(name):
    record = SAVED[name]
    params = [np.zeros_like(decode_array(p)) for p in record["params"]]
    opt = _fresh(name, params)
    opt.load(os.path.join(HERE, f"{name}.ckpt"))
    for p, want in zip(params, record["params"]):
        assert p.tobytes() == decode_array(want).tobytes()
    _assert_continues(name, opt, params)
