"""The README against the code, where drift can be found mechanically: the
options it lists are the option table's (and the reverse), with the table's
defaults; every ``opt.<name>`` and ``radam.<name>`` it names exists; and the
sentences an earlier review found stale stay gone."""

from __future__ import annotations

import ast
import importlib
import os
import re

import numpy as np
import pytest
import radam
from radam._options import BY_NAME, VARIANTS, defaults_of

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _readme() -> str:
    with open(os.path.join(ROOT, "README.md"), encoding="utf-8") as f:
        return f.read()


def _options_section() -> str:
    text = _readme()
    start = text.index("### Options")
    return text[start : text.index("\n## ", start)]


def _named_options() -> set[str]:
    """Every option the Options section names: a table row's first cell, a
    ``name=value`` in backticks, or a backticked name the table's prose gives."""
    section = _options_section()
    rows = set(re.findall(r"^\| `([a-z_0-9]+)", section, re.M))
    assigned = set(re.findall(r"`([a-z_0-9]+)=", section))
    return rows | assigned


def test_every_option_the_readme_names_is_in_the_table():
    unknown = sorted(_named_options() - set(BY_NAME))
    assert not unknown, f"the README's Options section names {unknown}, not in OPTIONS"


def test_every_option_of_the_table_is_in_the_readme():
    section = _options_section()
    missing = [name for name in BY_NAME if f"`{name}" not in section]
    assert not missing, f"OPTIONS has {missing}, which the README's Options section lacks"


def test_the_readmes_defaults_are_the_tables():
    defaults = defaults_of(VARIANTS["Adam"])
    rows = re.findall(r"^\| `([a-z_0-9]+)` \| `([^`]+)` \|", _options_section(), re.M)
    assert len(rows) >= 8
    for name, shown in rows:
        assert ast.literal_eval(shown) == defaults[name], name


def _optimizer_attributes() -> set[str]:
    opt = radam.Adam([np.zeros(3)])
    return {a for a in dir(opt) if not a.startswith("_")}


def test_every_optimizer_attribute_the_readme_names_exists():
    named = set(re.findall(r"\bopt\.([a-z_]+)", _readme()))
    missing = sorted(named - _optimizer_attributes())
    assert not missing, f"the README names opt.{missing}, which radam.Adam lacks"


def _resolve(dotted: str):
    parts = dotted.split(".")
    obj = radam
    for i, part in enumerate(parts[1:], start=1):
        if not hasattr(obj, part):
            obj = importlib.import_module(".".join(parts[: i + 1]))
        else:
            obj = getattr(obj, part)
    return obj


def test_every_radam_name_the_readme_uses_exists():
    names = set(re.findall(r"\bradam(?:\.[A-Za-z_][A-Za-z_0-9]*)+", _readme()))
    assert "radam.schedules" in names
    for dotted in sorted(names):
        try:
            _resolve(dotted)
        except (AttributeError, ImportError) as err:
            pytest.fail(f"the README names {dotted}, which does not exist: {err}")


@pytest.mark.parametrize(
    "where, stale",
    [
        ("README.md", "not yet wired into"),
        ("python/radam/optimizer.py", "float32 params and state only"),
        ("python/radam/gpu/_device.py", "updates float32 arrays only"),
    ],
)
def test_sentences_found_stale_stay_gone(where, stale):
    # radam::quant runs radam.Adam's 8-bit state; the GPU steps 16-bit params and
    # keeps 16-bit and 8-bit state.
    with open(os.path.join(ROOT, where), encoding="utf-8") as f:
        assert stale not in f.read()
