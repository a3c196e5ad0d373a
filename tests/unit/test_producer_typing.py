"""The producers' write methods type as documented: the stream id without
``wait``, the Receipt with ``wait=True`` (mypy, as a connector's author runs it)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

USAGE = """
from typing import assert_type
from rowcast.producers import Producer, Receipt, SyncProducer

async def f(p: Producer, s: SyncProducer) -> None:
    assert_type(await p.append("s", "r", "k", {}), str)
    assert_type(await p.extend("s", "r", "k", {}, wait=True), Receipt)
    assert_type(s.upsert("s", "r", "k", {}, wait=False), str)
    assert_type(s.append("s", "r", "k", {}, wait=True, timeout=3), Receipt)
"""


def _mypy(tmp_path: Path, source: str) -> subprocess.CompletedProcess[str]:
    f = tmp_path / "usage.py"
    f.write_text(source)
    # .ci/typecheck lays out .typecheck/, where mypy finds the rowcast namespace.
    subprocess.run(
        [sys.executable, str(ROOT / ".ci" / "typecheck"), "--version"],
        check=True,
        capture_output=True,
        cwd=ROOT,
    )
    return subprocess.run(
        [sys.executable, "-m", "mypy", "--config-file", str(ROOT / "pyproject.toml"), str(f)],
        capture_output=True, text=True, cwd=ROOT, timeout=300,
    )  # fmt: skip


def test_write_methods_return_the_id_or_the_receipt(tmp_path: Path) -> None:
    out = _mypy(tmp_path, USAGE)
    assert out.returncode == 0, out.stdout


def test_a_wrong_expectation_is_a_type_error(tmp_path: Path) -> None:
    out = _mypy(tmp_path, USAGE.replace("{}), str)", "{}), int)"))
    assert out.returncode == 1 and "assert-type" in out.stdout, out.stdout
