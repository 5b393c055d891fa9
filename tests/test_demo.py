"""python -m radam demo: runs on a reduced budget, learns, and writes its outputs."""

from __future__ import annotations

import subprocess
import sys

import pytest

pytest.importorskip("sklearn", reason="scikit-learn is in the test extra")
pytest.importorskip("matplotlib", reason="matplotlib is in the test extra")
pytest.importorskip("tqdm", reason="tqdm is in the test extra")

from radam import demo  # noqa: E402


def test_reduced_budget_learns_the_digits():
    data = demo.load_data(seed=0)
    runs = demo.train(data, epochs=6, batch_size=128, seed=0)
    assert [(r.model, r.optimizer) for r in runs] == [
        (m.name, o) for m in demo.MODELS for o, _ in demo.OPTIMIZERS
    ]
    by_name = {(r.model, r.optimizer): r for r in runs}
    logreg_adam = by_name[("logistic regression", "Adam")]
    assert logreg_adam.test_acc >= 0.90
    for r in runs:
        assert len(r.train_loss) == 6
        assert r.train_loss[-1] < r.train_loss[0]  # every run trains
        assert r.train_acc > 0.5


def test_command_prints_the_table_and_writes_the_plot(tmp_path):
    plot = tmp_path / "curves.png"
    out = subprocess.run(
        [sys.executable, "-m", "radam", "demo", "--quick", "--epochs", "3", "--plot", str(plot)],
        capture_output=True,
        text=True,
        timeout=300,
        check=True,
    )
    lines = out.stdout.splitlines()
    header = next(i for i, line in enumerate(lines) if line.startswith("model"))
    assert "train acc" in lines[header] and lines[header].rstrip().endswith("test acc")
    rows = lines[header + 2 : header + 2 + len(demo.MODELS) * len(demo.OPTIMIZERS)]
    assert sum("Adam" in r for r in rows) == len(demo.MODELS)
    assert all(r.rstrip().endswith("%") for r in rows)
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "epoch" in out.stderr  # the tqdm bar


def test_without_the_extra_it_names_the_install_command(monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "sklearn", None)
    assert demo.main(["--quick", "--no-plot"]) == 1
    err = capsys.readouterr().err
    assert "scikit-learn" in err and 'pip install "radam[demo]"' in err


def test_plain_python_m_radam_is_still_the_benchmark():
    out = subprocess.run(
        [sys.executable, "-m", "radam", "--params", "1000", "--repeats", "2"],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    assert "SIMD level" in out.stdout and "GB/s" in out.stdout
