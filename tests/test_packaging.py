"""The package installs as aidns.* only, ships its lists, and stays lint- and type-clean."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import venv
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
BARE_IMPORT = re.compile(r"^\s*(?:from|import)\s+(?:resolver|cli|blocklists)\b", re.M)


def test_no_bare_imports() -> None:
    offenders = [
        str(path.relative_to(ROOT))
        for path in ROOT.rglob("*.py")
        if "build" not in path.parts and BARE_IMPORT.search(path.read_text())
    ]
    assert offenders == []


def test_the_http_stack_is_loaded_only_for_encrypted_upstreams() -> None:
    # dnspython's DoT/DoH side brings httpx: a sixth of a second on every command's start
    check = (
        "import sys; from aidns.cli.main import app; "
        "from aidns.resolver.endpoints import parse_upstream; "
        "from aidns.resolver.upstream.pool import Upstream; "
        "Upstream(parse_upstream('192.0.2.1')); "
        "heavy = sorted(m for m in ('httpx2', 'dns.query', 'dns.asyncquery') if m in sys.modules); "
        "Upstream(parse_upstream('tls://192.0.2.1#dns.example')); "
        "print(heavy, 'dns.asyncquery' in sys.modules)"
    )
    result = subprocess.run(
        [sys.executable, "-c", check], capture_output=True, text=True, check=True
    )
    assert result.stdout.split("\n")[0] == "[] True"


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "-q",
            "-w",
            str(out),
            str(ROOT),
        ],
        check=True,
        capture_output=True,
    )
    (built,) = out.glob("aidns-*.whl")
    return built


def test_wheel_holds_aidns_packages_and_lists(wheel: Path) -> None:
    names = zipfile.ZipFile(wheel).namelist()
    top = {name.split("/")[0] for name in names if not name.startswith("aidns-")}
    assert top == {"aidns"}
    for wanted in ("aidns/resolver/server.py", "aidns/cli/main.py", "aidns/blocklists/sentry.yaml"):
        assert wanted in names
    assert "aidns/resolver/py.typed" in names


def test_installed_wheel_runs_in_a_fresh_venv(wheel: Path, tmp_path: Path) -> None:
    venv.create(tmp_path / "venv", system_site_packages=True, with_pip=False)
    python = tmp_path / "venv" / "bin" / "python"
    subprocess.run(
        [
            python,
            "-m",
            "pip",
            "install",
            "--no-deps",
            "--no-index",
            "-q",
            "--ignore-installed",
            str(wheel),
        ],
        check=True,
        capture_output=True,
    )
    aidns = tmp_path / "venv" / "bin" / "aidns"
    result = subprocess.run(
        [aidns, "--help"], capture_output=True, text=True, check=True, cwd=tmp_path
    )
    assert "serve" in result.stdout
    bare = subprocess.run([python, "-c", "import resolver"], capture_output=True, cwd=tmp_path)
    assert bare.returncode != 0


@pytest.mark.skipif(shutil.which("ruff") is None, reason="ruff is not installed")
def test_ruff_clean() -> None:
    result = subprocess.run(["ruff", "check", str(ROOT)], capture_output=True, text=True, cwd=ROOT)
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.skipif(shutil.which("mypy") is None, reason="mypy is not installed")
def test_mypy_strict_clean() -> None:
    result = subprocess.run(
        ["mypy", "-p", "aidns.resolver", "-p", "aidns.cli"],
        capture_output=True,
        text=True,
        cwd=ROOT,
    )
    assert result.returncode == 0, result.stdout + result.stderr
