"""The package installs as aidns.* only, ships its lists, and stays lint- and type-clean."""

from __future__ import annotations

import importlib.util
import re
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


def test_wheel_holds_every_source_file(wheel: Path) -> None:
    names = set(zipfile.ZipFile(wheel).namelist())
    shipped = {"resolver": "aidns/resolver", "cli": "aidns/cli", "blocklists": "aidns/blocklists"}
    sources = [
        f"{prefix}/{path.relative_to(ROOT / folder).as_posix()}"
        for folder, prefix in shipped.items()
        for path in (ROOT / folder).rglob("*")
        if path.is_file() and "__pycache__" not in path.parts
    ]
    assert len(sources) > 50
    assert sorted(set(sources) - names) == []


def _run(argv: list[str | Path], cwd: Path) -> subprocess.CompletedProcess[str]:
    """Run a step of the install; on failure the assertion shows the step's own output."""
    result = subprocess.run(argv, capture_output=True, text=True, cwd=cwd)
    assert result.returncode == 0, f"{argv} failed:\n{result.stdout}{result.stderr}"
    return result


def test_installed_wheel_runs_in_a_fresh_venv(wheel: Path, tmp_path: Path) -> None:
    # The new venv sees only its own site-packages plus the folders that hold aidns's
    # dependencies here, wherever pytest runs (system Python or a venv); never aidns itself.
    venv.create(tmp_path / "venv", with_pip=False)
    python = tmp_path / "venv" / "bin" / "python"
    site = Path(_run([python, "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"],
                     tmp_path).stdout.strip())  # fmt: skip
    folders = {
        str(Path(spec.origin).parent.parent)
        for name in ("dnslib", "dns", "yaml", "typer", "watchdog")
        if (spec := importlib.util.find_spec(name)) is not None and spec.origin
    }
    (site / "dependencies.pth").write_text("\n".join(sorted(folders)) + "\n")
    _run([sys.executable, "-m", "pip", "--python", python, "install", "--no-deps", "--no-index",
          "-q", str(wheel)], tmp_path)  # fmt: skip
    aidns = tmp_path / "venv" / "bin" / "aidns"
    assert "serve" in _run([aidns, "--help"], tmp_path).stdout
    where = _run([python, "-c", "import aidns.resolver as r; print(r.__file__)"], tmp_path)
    assert where.stdout.startswith(str(site))
    bare = subprocess.run([python, "-c", "import resolver"], capture_output=True, cwd=tmp_path)
    assert bare.returncode != 0


@pytest.mark.skipif(importlib.util.find_spec("ruff") is None, reason="ruff is not installed")
def test_ruff_clean() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "ruff", "check", str(ROOT)], capture_output=True, text=True, cwd=ROOT
    )
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.skipif(importlib.util.find_spec("mypy") is None, reason="mypy is not installed")
def test_mypy_strict_clean() -> None:
    # the mypy of the environment running the tests, which is where aidns is installed
    result = subprocess.run(
        [sys.executable, "-m", "mypy", "-p", "aidns.resolver", "-p", "aidns.cli"],
        capture_output=True,
        text=True,
        cwd=ROOT,
    )
    assert result.returncode == 0, result.stdout + result.stderr
