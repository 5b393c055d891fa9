"""The README's Python quickstart runs as written and does what it says."""

from pathlib import Path

import numpy as np
import pytest

README = Path(__file__).resolve().parents[1] / "README.md"


def python_blocks(text: str) -> list[str]:
    blocks, lines, inside = [], [], False
    for line in text.splitlines():
        if line.strip() == "```python":
            inside, lines = True, []
        elif inside and line.strip() == "```":
            inside = False
            blocks.append("\n".join(lines))
        elif inside:
            lines.append(line)
    return blocks


def test_the_quickstart_fits_the_least_squares_solution(capsys):
    if not README.exists():  # the installed wheel's tests run without the sources
        pytest.skip("README.md is not beside the tests")
    (quickstart,) = python_blocks(README.read_text())
    namespace: dict = {}
    exec(compile(quickstart, "README.md", "exec"), namespace)
    X, y, w = namespace["X"], namespace["y"], namespace["w"]
    np.testing.assert_allclose(w, np.linalg.lstsq(X, y, rcond=None)[0], atol=1e-6)
    assert capsys.readouterr().out.strip()
