"""mkdocs hook: the committed benchmark report (``benchmarks/report/``, written by
``benchmarks/report.py``) joins the site under ``report/``, so the performance
page shows its plots and links its tables where the script left them, with no copy
in docs/ to fall out of date."""

from __future__ import annotations

from pathlib import Path

from mkdocs.structure.files import File

REPORT = Path(__file__).resolve().parents[2] / "benchmarks" / "report"


def on_files(files, config):  # noqa: ARG001
    for path in sorted(REPORT.iterdir()):
        if path.suffix in (".png", ".md"):
            files.append(File.generated(config, f"report/{path.name}", abs_src_path=str(path)))
    return files
