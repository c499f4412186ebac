"""Every mistake on the command line is one clear line and exit status 2, never a traceback."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import httpx
import numpy as np
import pytest

from saec import __version__
from tests.conftest import write_small_store
from tests.e2e.test_uvicorn import _free_port

ROOT = Path(__file__).resolve().parents[2]


def saec(*args: str, env: dict[str, str] | None = None, cwd: Path | None = None, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "saec.cli", *args],
        capture_output=True, text=True, timeout=timeout, cwd=cwd or ROOT,
        env={**os.environ, **(env or {})},
    )  # fmt: skip


@pytest.fixture
def afile(tmp_path: Path) -> Path:
    f = tmp_path / "afile"
    f.write_text("not a store")
    return f


@pytest.mark.parametrize(
    "args, expected",
    [
        (["demo", "--store", "{afile}"], "saec demo: --store {afile}: expected a store folder, got a file"),
        (["serve", "--store", "{afile}"], "saec serve: --store {afile}: expected a store folder, got a file"),
        (["serve", "--store", "{missing}"], "saec serve: --store {missing}: no such folder; expected a store made by `saec demo` or `saec compress` (or pass --wait to wait for a first snapshot)"),
        (["snapshots", "--store", "{missing}"], "saec snapshots: --store {missing}: no such folder; expected a store made by `saec demo` or `saec compress`"),
        (["verify", "--store", "{missing}"], "saec verify: --store {missing}: no such folder"),
        (["rollback", "--store", "{afile}"], "saec rollback: --store {afile}: expected a store folder, got a file"),
    ],
)  # fmt: skip
def test_bad_store_paths(tmp_path: Path, afile: Path, args: list[str], expected: str) -> None:
    paths = {"afile": str(afile), "missing": str(tmp_path / "typo")}
    run = saec(*[a.format(**paths) for a in args], timeout=30)
    assert run.returncode == 2
    assert run.stderr.strip().splitlines()[-1].startswith(expected.format(**paths)), run.stderr
    assert "Traceback" not in run.stderr and len(run.stderr.strip().splitlines()) == 1


@pytest.mark.parametrize(
    "var, value, expected",
    [
        ("SAEC_PORT", "abc", "SAEC_PORT: expected an integer 1-65535 (0: any free port), got 'abc'"),
        ("SAEC_RELOAD_INTERVAL", "soon", "SAEC_RELOAD_INTERVAL: expected a finite number >= 0 (0: never), got 'soon'"),
        ("SAEC_VERIFY_ON_OPEN", "maybe", "SAEC_VERIFY_ON_OPEN: expected true or false"),
        ("SAEC_WORKERS", "0", "SAEC_WORKERS: expected an integer >= 1, got '0'"),
        ("SAEC_DEFAULT_VECTOR", "ones", "SAEC_DEFAULT_VECTOR: expected 'zeros' or 'mean', got 'ones'"),
    ],
)
def test_bad_settings_name_the_variable_and_leave_help_working(
    small_store: tuple[Path, dict], var: str, value: str, expected: str
) -> None:
    root, _ = small_store
    assert saec("--help", env={var: value}).returncode == 0
    run = saec("snapshots", "--store", str(root), env={var: value})
    assert run.returncode == 2 and "Traceback" not in run.stderr
    assert run.stderr.strip().startswith(f"saec snapshots: {expected}"), run.stderr


def test_version_and_help_texts() -> None:
    assert saec("--version").stdout.strip() == f"saec {__version__}"
    serve = saec("serve", "--help").stdout
    for line in ("--port PORT", "(SAEC_PORT; default: 8000)", "--wait", "--max-ids MAX_IDS", "(SAEC_MAX_IDS; default: 262144)"):
        assert line in serve
    demo = saec("demo", "--help").stdout
    assert "(default: 100)" in demo and "codebook size" in demo


def test_help_imports_no_compiler_and_no_torch() -> None:
    code = (
        "import sys\n"
        "from saec.cli import main\n"
        "try:\n    main(['--help'])\nexcept SystemExit:\n    pass\n"
        "print(sorted({m.split('.')[0] for m in sys.modules} & {'numba', 'llvmlite', 'torch', 'zarr', 'sklearn'}))\n"
    )
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=60)
    assert run.stdout.strip().splitlines()[-1] == "[]", run.stdout + run.stderr


WITHOUT_EXTRAS = (
    "import importlib.abc, importlib.util, sys\n"
    "class Missing(importlib.abc.MetaPathFinder):\n"
    "    def find_spec(self, name, path=None, target=None):\n"
    "        if name.split('.')[0] in {'torch', 'sklearn', 'pyarrow', 'matplotlib', 'dask', 'distributed', 's3fs', 'fsspec'}:\n"
    "            raise ModuleNotFoundError(f'No module named {name!r}', name=name)\n"
    "find = importlib.util.find_spec\n"
    "importlib.util.find_spec = lambda name, *a: None if name.split('.')[0] == 'torch' else find(name, *a)\n"
    "sys.meta_path.insert(0, Missing())\n"
    "from saec.cli import main\n"
)


def test_a_missing_extra_names_its_pip_install() -> None:
    # Runs `saec evaluate` as if no extra were installed.
    code = WITHOUT_EXTRAS + "sys.exit(main(['evaluate', '--out', 'x']))\n"
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=60)
    assert run.returncode == 2 and "Traceback" not in run.stderr
    assert run.stderr.strip() == "saec evaluate: needs PyTorch, from the training extra: pip install 'saec[training]'"


@pytest.mark.parametrize("command, option", [("evaluate", "--quick"), ("compress", "--k"), ("update", "--batch-rows"),
                                             ("fold", "--keep"), ("serve", "--port"), ("demo", "--scale")])
def test_help_of_every_command_works_without_its_extra(command: str, option: str) -> None:
    code = WITHOUT_EXTRAS + f"sys.exit(main([{command!r}, '--help']))\n"
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=60)
    assert run.returncode == 0 and run.stderr == "", run.stderr
    assert run.stdout.startswith(f"usage: saec {command}") and option in run.stdout, run.stdout


@pytest.mark.slow
def test_serve_wait_serves_the_first_snapshot_published(tmp_path: Path) -> None:
    store = tmp_path / "later"
    port = _free_port()
    log = open(tmp_path / "serve.log", "w+b")
    proc = subprocess.Popen(
        [sys.executable, "-m", "saec.cli", "serve", "--store", str(store), "--wait", "--port", str(port),
         "--reload-interval", "0.2", "--log-level", "warning"],
        cwd=ROOT, stdout=log, stderr=subprocess.STDOUT,
    )  # fmt: skip
    try:
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 60
        with httpx.Client(base_url=url, timeout=5) as c:
            while True:
                try:
                    if c.get("/healthz").status_code == 200:
                        break
                except httpx.TransportError:
                    assert proc.poll() is None and time.monotonic() < deadline
                    time.sleep(0.2)
            assert c.get("/readyz").status_code == 503
            data = write_small_store(store, np.random.default_rng(0))
            while c.get("/readyz").status_code != 200:
                assert time.monotonic() < deadline
                time.sleep(0.2)
            assert c.get("/readyz").json()["version"] == data["version"]
    finally:
        proc.terminate()
        proc.wait(timeout=15)
        log.close()
