"""The layout the README promises: one installed namespace, imports that
follow the data flow, and nothing installed that needs the test extras."""

from __future__ import annotations

import ast
import importlib
import shutil
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
MAPPING: dict[str, str] = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"][
    "setuptools"
]["package-dir"]

# Data flows left to right; a module may import its own stage or one to its left.
FLOW = ["rowcast.contract", "rowcast.producers", "rowcast.writer", "rowcast.broadcaster"]
TOP = "rowcast.ops"  # composes the others; nothing imports it


def _modules() -> dict[str, Path]:
    found = {}
    for package, folder in MAPPING.items():
        for path in sorted((ROOT / folder).glob("*.py")):
            name = package if path.stem == "__init__" else f"{package}.{path.stem}"
            found[name] = path
    return found


def _stage(module: str) -> int:
    if module == TOP or module.startswith(TOP + "."):
        return len(FLOW)
    for rank, stage in reversed(list(enumerate(FLOW))):
        if module == stage or module.startswith(stage + "."):
            return rank
    raise AssertionError(f"{module} is in no stage")


def _all_imports(path: Path) -> list[str]:
    """Every module a file imports; a relative import as ``.``-prefixed."""
    names = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            names.append("." * node.level + (node.module or ""))
        elif isinstance(node, ast.Import):
            names.extend(a.name for a in node.names)
    return names


def _imports(path: Path) -> list[str]:
    return [n for n in _all_imports(path) if n == "rowcast" or n.startswith("rowcast.")]


def test_imports_follow_the_data_flow() -> None:
    against = []
    for module, path in _modules().items():
        for imported in _imports(path):
            if imported.startswith("rowcast.producers.contract"):
                against.append(f"{module} imports {imported} (its name is rowcast.contract)")
            elif _stage(imported) > _stage(module):
                against.append(f"{module} imports {imported}")
    assert against == []


def test_the_graph_check_sees_a_backward_import(tmp_path: Path) -> None:
    bad = tmp_path / "bad.py"
    bad.write_text("from rowcast.ops.settings import Settings\n")
    assert _stage(_imports(bad)[0]) > _stage("rowcast.writer.batch")


FOLDERS = ("producers", "writer", "broadcaster", "ops")


def test_no_command_line_tool_or_generic_top_level_name_outside_the_namespace() -> None:
    for folder in FOLDERS:
        for path in (ROOT / folder).rglob("*.py"):
            for imported in _all_imports(path):
                # Relative imports would hide a stage from the graph check.
                assert not imported.startswith("."), (path, imported)
                assert imported.split(".")[0] not in FOLDERS, (path, imported)
            text = path.read_text()
            for old in ("from producers", "from writer", "from broadcaster", "from ops"):
                assert f"\n{old}." not in text and f"\n{old} import" not in text, path


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    # Built from a copy, so the checkout gets no build/ folder.
    src = tmp_path_factory.mktemp("src") / "rowcast"
    shutil.copytree(
        ROOT,
        src,
        ignore=shutil.ignore_patterns(
            ".git", ".venv", "build", ".typecheck", "*.egg-info", "__pycache__", ".*_cache"
        ),
    )
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q",
         "-w", str(out), str(src)],
        check=True, capture_output=True, timeout=120,
    )  # fmt: skip
    return next(out.glob("rowcast-*.whl"))


def test_a_plain_install_has_one_top_level_name(wheel: Path) -> None:
    names = zipfile.ZipFile(wheel).namelist()
    tops = {n.split("/")[0] for n in names if not n.split("/")[0].endswith(".dist-info")}
    assert tops == {"rowcast"}
    assert "rowcast/ops/schema/migrations/0001.schema.sql" in names
    assert "rowcast/broadcaster/static/app.js" in names
    assert not [n for n in names if "bench" in n]


TEST_ONLY = ["pytest", "httpx", "hypothesis", "fakeredis", "selenium", "mypy", "ruff"]


def test_every_installed_module_imports_without_the_test_extras(
    wheel: Path, tmp_path: Path
) -> None:
    zipfile.ZipFile(wheel).extractall(tmp_path)
    modules = sorted(
        n[:-3].replace("/", ".").removesuffix(".__init__")
        for n in zipfile.ZipFile(wheel).namelist()
        if n.endswith(".py")
    )
    script = f"""
import importlib, importlib.abc, sys
class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split('.')[0] in {TEST_ONLY!r}:
            raise ImportError('test extra imported: ' + name)
sys.meta_path.insert(0, Block())
sys.path.insert(0, {str(tmp_path)!r})
for m in {modules!r}:
    importlib.import_module(m)
    assert sys.modules[m].__file__.startswith({str(tmp_path)!r}), m
"""
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]


@pytest.mark.parametrize(
    "bench", sorted(p.stem for p in (ROOT / "tests" / "bench").glob("[a-z]*.py"))
)
def test_every_benchmark_imports(bench: str) -> None:
    # Benchmarks run by hand, not in CI: at least their imports must hold.
    importlib.import_module(f"tests.bench.{bench}")
