"""Which modules reach the Rust extension directly. import-linter (in CI) keeps
radam's layers, but it cannot see the extension, which has no Python source:
this test reads the imports of every module instead."""

from __future__ import annotations

import ast
import os

import radam

PACKAGE = os.path.dirname(radam.__file__)
# The modules that may import radam._core: the package root (its version and
# SIMD facts), the option table (the core's config and names), the state formats
# (the 8-bit codec's block and bindings), the backends (the CPU engine),
# checkpoints (the version) and the GPU engine (its rows).
MAY_IMPORT_THE_EXTENSION = {
    "radam",
    "radam._options",
    "radam._formats",
    "radam._backends",
    "radam.checkpoint",
    "radam.gpu._device",
    "radam.gpu._engine",
    "radam.gpu._layout",
}


def _modules() -> dict[str, ast.Module]:
    found = {}
    for folder, _, files in os.walk(PACKAGE):
        for file in files:
            if file.endswith(".py"):
                path = os.path.join(folder, file)
                rel = os.path.relpath(path, os.path.dirname(PACKAGE))[: -len(".py")]
                name = rel.replace(os.sep, ".").removesuffix(".__init__")
                with open(path, encoding="utf-8") as f:
                    found[name] = ast.parse(f.read())
    return found


def _imports_core(name: str, tree: ast.Module) -> bool:
    package = name if name == "radam" else name.rsplit(".", 1)[0]
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            if any(a.name == "radam._core" for a in node.names):
                return True
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")
                parts = parts[: len(parts) - node.level + 1]
                base = ".".join(parts + ([base] if base else []))
            if base == "radam._core" or (
                base == "radam" and any(a.name == "_core" for a in node.names)
            ):
                return True
    return False


def test_only_the_boundary_modules_import_the_extension():
    modules = _modules()
    assert "radam.compat.downhill" in modules and "radam.gpu._engine" in modules
    importers = {name for name, tree in modules.items() if _imports_core(name, tree)}
    assert importers == MAY_IMPORT_THE_EXTENSION


def test_the_reader_sees_each_form_of_import():
    for source in ("from . import _core", "from ._core import x", "import radam._core"):
        assert _imports_core("radam.mod", ast.parse(source)), source
    assert _imports_core("radam.gpu.mod", ast.parse("from .. import _core"))
    assert not _imports_core("radam.gpu.mod", ast.parse("from . import _core"))
    assert not _imports_core("radam.mod", ast.parse("from . import _options"))
