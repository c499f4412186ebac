"""The wheel installs one import package, `saec`, and works beside a user's own
`server.py` and `clients/` (which a wheel with generic top-level modules would clash with)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
import time
from pathlib import Path

import httpx
import numpy as np
import pytest

from tests.conftest import write_small_store
from tests.e2e.test_uvicorn import _free_port

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
SOURCES = ["pyproject.toml", "README.md", "saec", "store", "server", "clients", "loaders", "compress", "training"]


def _site_packages(venv: Path) -> Path:
    return next(venv.glob("lib/python3*/site-packages"))


@pytest.fixture(scope="module")
def venv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh venv with saec's wheel installed (no dependencies: they come from this
    environment through a .pth file, so the test needs no network and no build)."""
    tmp = tmp_path_factory.mktemp("wheel")
    src = tmp / "src"
    src.mkdir()
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", "*.nbi", "*.nbc")
    for name in SOURCES:
        path = ROOT / name
        if path.is_dir():
            shutil.copytree(path, src / name, ignore=ignore)
        else:
            shutil.copy2(path, src / name)
    dist = tmp / "dist"
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-index", "-q", "-w", str(dist), str(src)],
        check=True, capture_output=True, timeout=300,
    )  # fmt: skip
    (wheel,) = dist.glob("saec-*.whl")
    env = tmp / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(env)], check=True, timeout=120)
    site = _site_packages(env)
    # Only this environment's site directories, appended after the venv's own: their
    # .pth files (an editable saec, if any) are not run, so `saec` can only come from the wheel.
    paths = {sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]}
    (site / "_deps.pth").write_text("\n".join(sorted(paths)) + "\n")
    before = set(os.listdir(site))
    subprocess.run(
        [sys.executable, "-m", "pip", "--python", str(env / "bin" / "python"), "install", "--no-deps", "--no-index", "-q", str(wheel)],
        check=True, capture_output=True, timeout=300,
    )  # fmt: skip
    added = set(os.listdir(site)) - before
    (tmp / "added.txt").write_text("\n".join(sorted(added)))
    return env


def test_only_saec_and_its_dist_info_are_added(venv: Path) -> None:
    added = set((venv.parent / "added.txt").read_text().split())
    assert {a for a in added if not a.endswith(".dist-info")} == {"saec"}, added
    assert len([a for a in added if a.endswith(".dist-info")]) == 1 and next(iter(added - {"saec"})).startswith("saec-")
    for sub in ("store", "server", "clients", "loaders", "compress", "training"):
        assert (_site_packages(venv) / "saec" / sub / "__init__.py").is_file()


def test_a_users_server_py_and_clients_do_not_shadow_saec(venv: Path, tmp_path: Path) -> None:
    work = tmp_path / "work"
    (work / "clients").mkdir(parents=True)
    for shadow in (work / "server.py", work / "store.py", work / "clients" / "__init__.py"):
        shadow.write_text("raise RuntimeError('the user\\'s own module was imported instead of saec\\'s')\n")
    store = work / "store"
    data = write_small_store(store, np.random.default_rng(8))
    python = str(venv / "bin" / "python")
    version = subprocess.run([str(venv / "bin" / "saec"), "--version"], cwd=work, capture_output=True, text=True, timeout=60)
    assert version.returncode == 0 and version.stdout.startswith("saec "), version.stderr
    port = _free_port()
    log = open(tmp_path / "serve.log", "w+b")
    # `python -m` puts the working directory first on sys.path: the harshest case.
    proc = subprocess.Popen(
        [python, "-m", "saec.cli", "serve", "--store", "store", "--port", str(port), "--log-level", "warning"],
        cwd=work, stdout=log, stderr=subprocess.STDOUT,
    )  # fmt: skip
    try:
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 90
        while True:
            try:
                if httpx.get(url + "/readyz", timeout=5).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                log.seek(0)
                pytest.fail("saec serve from the wheel did not come up:\n" + log.read().decode(errors="replace"))
            time.sleep(0.3)
        client = (
            "import saec, sys\n"
            "from saec import SaecClient\n"
            f"with SaecClient({url!r}) as c:\n"
            "    res = c.lookup({'user': [3, 10, -5], 'country': ['c1']})\n"
            "print(saec.__file__, res['user'].found.tolist(), res['country'].found.tolist(), res.version)\n"
        )
        run = subprocess.run([python, "-c", client], cwd=work, capture_output=True, text=True, timeout=120)
    finally:
        proc.terminate()
        proc.wait(timeout=15)
        log.close()
    assert run.returncode == 0, run.stderr
    where, answer = run.stdout.strip().split(maxsplit=1)
    assert Path(where).is_relative_to(_site_packages(venv))  # saec from the wheel, not the checkout
    assert answer == f"[True, True, False] [True] {data['version']}"


def test_the_grpc_stubs_and_client_are_installed(venv: Path) -> None:
    code = (
        "import saec.v1.saec_pb2, saec.v1.saec_pb2_grpc, saec.v1.packed, saec.server.grpc_service; "
        "from saec.clients import SaecGrpcClient; import os; print(os.path.dirname(saec.v1.saec_pb2.__file__))"
    )
    done = subprocess.run([str(venv / "bin" / "python"), "-c", code], capture_output=True, text=True, timeout=120, cwd="/")
    assert done.returncode == 0, done.stderr
    installed = Path(done.stdout.strip())
    assert installed.parent.parent == _site_packages(venv)  # from the wheel, not the checkout
    assert (installed / "saec_pb2.pyi").exists()  # typed for a user's mypy
