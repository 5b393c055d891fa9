"""The README and the docs site against the code, where drift can be found
mechanically: every option they write as ``name=value`` is in the option table
(the options page's table is generated from it), every ``opt.<name>`` and
``radam.<name>`` they name exists, and the sentences an earlier review found
stale stay gone."""

from __future__ import annotations

import importlib
import inspect
import re
from pathlib import Path

import numpy as np
import pytest
import radam
from radam._options import BY_NAME

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
# Keywords of other APIs that the pages write as name=value: (where it is a parameter).
OTHER_KEYWORDS = {
    "formula": "radam.compat.downhill.Adam",
    "optimizer": "radam.distributed.AveragedAdam",
}


def _text() -> str:
    if not (ROOT / "README.md").exists():  # the installed wheel's tests run without them
        pytest.skip("README.md and docs/ are not beside the tests")
    text = "\n".join(page.read_text(encoding="utf-8") for page in PAGES)
    # Rust blocks name the crate's API (radam::candle's ``opt.backward_step``), not
    # the Python one; cargo compiles what it can of them.
    return re.sub(r"```rust.*?```", "", text, flags=re.S)


def test_every_option_the_pages_set_is_in_the_table():
    named = set(re.findall(r"`([a-z_0-9]+)=", _text()))
    unknown = sorted(named - set(BY_NAME) - set(OTHER_KEYWORDS))
    assert not unknown, f"the README or docs set {unknown}, which OPTIONS lacks"
    assert "state_dtype" in named and "master_weights" in named  # it reads them


@pytest.mark.parametrize("keyword, owner", sorted(OTHER_KEYWORDS.items()))
def test_the_other_keywords_are_their_apis(keyword, owner):
    module, name = owner.rsplit(".", 1)
    cls = getattr(importlib.import_module(module), name)
    assert keyword in inspect.signature(cls).parameters


def _optimizer_attributes() -> set[str]:
    opt = radam.Adam([np.zeros(3)])
    return {a for a in dir(opt) if not a.startswith("_")}


def test_every_optimizer_attribute_the_pages_name_exists():
    named = set(re.findall(r"\bopt\.([a-z_]+)", _text()))
    assert {"current_lr", "last_lr", "state_dict"} <= named
    missing = sorted(named - _optimizer_attributes())
    assert not missing, f"the README or docs name opt.{missing}, which radam.Adam lacks"


def _resolve(dotted: str):
    parts = dotted.split(".")
    obj = radam
    for i, part in enumerate(parts[1:], start=1):
        if not hasattr(obj, part):
            obj = importlib.import_module(".".join(parts[: i + 1]))
        else:
            obj = getattr(obj, part)
    return obj


def test_every_radam_name_the_pages_use_exists():
    names = set(re.findall(r"\bradam(?:\.[A-Za-z_][A-Za-z_0-9]*)+", _text()))
    assert "radam.schedules" in names
    for dotted in sorted(names):
        try:
            _resolve(dotted)
        except (AttributeError, ImportError) as err:
            pytest.fail(f"the README or docs name {dotted}, which does not exist: {err}")


@pytest.mark.parametrize(
    "where, stale",
    [
        ("README.md", "not yet wired into"),
        ("docs/frameworks.md", "not yet wired into"),
        ("docs/checkpoints.md", "read the values in effect"),
        ("python/radam/optimizer.py", "float32 params and state only"),
        ("python/radam/gpu/_device.py", "updates float32 arrays only"),
    ],
)
def test_sentences_found_stale_stay_gone(where, stale):
    # radam::quant runs radam.Adam's 8-bit state; current_lr is the next step's;
    # the GPU steps 16-bit params and keeps 16-bit and 8-bit state.
    path = ROOT / where
    if not path.exists():
        pytest.skip(f"{where} is not beside the tests")
    assert stale not in path.read_text(encoding="utf-8")


def test_the_gpu_pages_public_names_are_radam_gpus_all():
    _text()  # skips where the docs are not beside the tests
    from radam import gpu

    page = (ROOT / "docs" / "gpu.md").read_text(encoding="utf-8")
    section = page.split("## The public names", 1)[1].split("\n## ", 1)[0]
    listed = set(re.findall(r"^- `([A-Za-z_]+)", section, flags=re.M))
    listed |= set(re.findall(r"^- `[A-Za-z_]+` and `([A-Za-z_]+)", section, flags=re.M))
    assert listed == set(gpu.__all__)
