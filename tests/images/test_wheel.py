"""The images' install, done here: the wheel builds from the files the Dockerfile's builder
copies, installs into a fresh virtualenv with each extra, and every service's console
script starts from that install — no PYTHONPATH, working directory outside the repository.
The bare install (the client) imports `mint.Client` with neither torch nor the services'
libraries installed.

Installing the dependencies afresh each run would take minutes (torch alone is gigabytes),
so they come as layers, the way a container build caches its layers:

- client: the core dependencies alone; slim: those and the `server` extra's. Each is
  installed once per distinct list (and Python version) into `$MINT_CACHE/images-test/`,
  then reused: no torch, no dev tools.
- serving: the interpreter running the tests, whose environment `make venv` installed
  from the same pyproject.toml with the serving and dev extras.

Each run makes a new virtualenv, adds its layer to the venv's path with a `.pth` file,
and installs the freshly built wheel with pip's resolver, offline (`--no-index`): the
install succeeds only if every requirement of `mint` (or `mint[serving]`) is satisfied,
and then only the wheel itself is installed. So the client is shown to need only the core
dependencies, the slim services only `server` and the node `serving`; what it does not
show is that an index still serves those versions (the image build does that).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import sysconfig
import tomllib
import zipfile
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from deploy.local import bootstrap

from .dockerfile import REPO, parse

PROJECT = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
# Console script -> the module whose main() it runs (pyproject.toml's [project.scripts]).
SLIM_SCRIPTS = {
    "mint-registry": "services.registry.__main__",
    "mint-projector": "streams.projector.__main__",
    "mint-controller": "services.controller.__main__",
    "mint-router": "services.router.__main__",
    "mint-audit": "mint.audit.__main__",
}
SERVING_SCRIPTS = {
    "mint-node": "services.inference.__main__",
    "mint-trainer": "streams.trainer.__main__",
    "mint-evaluator": "streams.evaluator.__main__",
}
CLIENT_SCRIPTS = {"mint": "mint.cli_app"}
# What no client install may bring: torch, and the services' Kafka, S3 and settings.
NOT_IN_A_CLIENT = ("torch", "kafka", "minio", "pydantic_settings", "transformers")
# Every module the slim services may import, lazily imported back ends included.
SLIM_PACKAGES = [
    "services.registry",
    "streams.projector",
    "services.controller",
    "services.router",
    "mint.audit",
    "mint.backends",
]
IMPORT_ALL = """
import importlib, pkgutil, sys
for name in sys.argv[1:]:
    package = importlib.import_module(name)
    for module in pkgutil.walk_packages(package.__path__, name + "."):
        importlib.import_module(module.name)
"""
PURELIB = "import sysconfig; print(sysconfig.get_path('purelib'))"
SECONDS = 120


def _pip(*args: str) -> list[str]:
    return [sys.executable, "-m", "pip", "--disable-pip-version-check", "-q", *args]


def _clean_env() -> dict[str, str]:
    """This environment without what would let the repository's sources leak in."""
    return {k: v for k, v in os.environ.items() if not k.startswith("PYTHON")}


def _run(args: list[str], cwd: Path, timeout: float = SECONDS) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        args, cwd=cwd, env=_clean_env(), capture_output=True, text=True, timeout=timeout
    )


def _output(result: subprocess.CompletedProcess[str]) -> str:
    return f"{' '.join(map(str, result.args))}\n{result.stdout}{result.stderr}"


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_wheel(tmp_path_factory.mktemp("src"), tmp_path_factory.mktemp("dist"))


def build_wheel(source: Path, dist: Path) -> Path:
    """Built in `dist` from a copy (in `source`) of exactly what the Dockerfile's builder
    stage copies."""
    for name in parse().copied_sources("builder"):
        if (REPO / name).is_dir():
            shutil.copytree(REPO / name, source / name, ignore=shutil.ignore_patterns("__py*"))
        else:
            shutil.copy(REPO / name, source / name)
    build = _pip("wheel", "--no-deps", "--no-build-isolation", "--wheel-dir", str(dist), ".")
    result = _run(build, cwd=source)
    assert result.returncode == 0, _output(result)
    (built,) = dist.glob("mint-*.whl")
    return built


def _layer(name: str, requirements: list[str]) -> Path:
    """`requirements` alone, installed once per list and Python version."""
    key = json.dumps([sys.version_info[:2], sysconfig.get_platform(), requirements])
    cache = Path(os.environ.get("MINT_CACHE", REPO / ".mint")) / "images-test"
    layer = cache / f"{name}-{hashlib.sha256(key.encode()).hexdigest()[:16]}"
    if not layer.exists():
        partial = cache / f"{layer.name}.{os.getpid()}.partial"
        shutil.rmtree(partial, ignore_errors=True)
        cache.mkdir(parents=True, exist_ok=True)
        install = _pip("install", "--target", str(partial), *requirements)
        result = _run(install, cwd=cache, timeout=600)
        assert result.returncode == 0, f"installing the {name} layer:\n{_output(result)}"
        try:
            partial.rename(layer)  # whole or not at all
        except OSError:  # a concurrent run got there first
            shutil.rmtree(partial)
    return layer


def _fresh_venv(path: Path, layer: Path, wheel: Path, requirement: str) -> Path:
    """A new virtualenv over `layer`, with `requirement` resolved offline from `wheel`.
    Returns its site-packages."""
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(path)], check=True)
    python = str(path / "bin" / "python")
    site = Path(_run([python, "-c", PURELIB], cwd=path).stdout.strip())
    # A site directory like the venv's own (its .pth files run too), searched after it.
    (site / "layer.pth").write_text(f"import site; site.addsitedir({str(layer)!r})\n")
    install = _pip("--python", python, "install", "--no-index", "--find-links", str(wheel.parent))
    result = _run([*install, requirement], cwd=path)
    assert result.returncode == 0, (
        f"{requirement} does not resolve on its layer:\n{_output(result)}"
    )
    return site


def _start(venv: Path, scripts: Iterable[str], cwd: Path) -> dict[str, set[str]]:
    """Runs each console script with --help; returns the modules each one imported."""
    python, names = str(venv / "bin" / "python"), list(scripts)
    with ThreadPoolExecutor(max_workers=2) as pool:  # imports are CPU-bound: 2 cores here
        runs = pool.map(
            lambda s: _run([python, "-X", "importtime", str(venv / "bin" / s), "--help"], cwd),
            names,
        )
    imported = {}
    for script, result in zip(names, runs, strict=True):
        assert result.returncode == 0 and "usage:" in result.stdout.lower(), _output(result)
        lines = result.stderr.splitlines()
        imported[script] = {line.rpartition("|")[2].strip() for line in lines if "|" in line}
    return imported


def _python(venv: Path, code: str, *args: str) -> str:
    result = _run([str(venv / "bin" / "python"), "-c", code, *args], cwd=venv)
    assert result.returncode == 0, _output(result)
    return result.stdout


def test_the_wheel_holds_every_module_stub_and_script(wheel: Path) -> None:
    names = set(zipfile.ZipFile(wheel).namelist())
    for package in ("mint", "services", "streams"):
        sources = {
            str(p.relative_to(REPO))
            for p in (REPO / package).rglob("*")
            if p.suffix in {".py", ".pyi", ".typed"} and "__pycache__" not in p.parts
        }
        assert sources <= names, f"missing from the wheel: {sorted(sources - names)}"
    assert not {n for n in names if n.startswith(("tests/", "deploy/", "bench/"))}
    (entry_points,) = [n for n in names if n.endswith(".dist-info/entry_points.txt")]
    scripts = zipfile.ZipFile(wheel).read(entry_points).decode()
    for script, module in (SLIM_SCRIPTS | SERVING_SCRIPTS | CLIENT_SCRIPTS).items():
        assert f"{script} = {module}:main" in scripts


def _slim_layer() -> Path:
    return _layer("slim", [*PROJECT["dependencies"], *PROJECT["optional-dependencies"]["server"]])


@pytest.mark.timeout(900)  # the first run installs the client layer
def test_client_install_has_the_clients_and_nothing_of_the_services(
    wheel: Path, tmp_path: Path
) -> None:
    venv = tmp_path / "client"
    site = _fresh_venv(venv, _layer("client", PROJECT["dependencies"]), wheel, "mint")
    found = _python(
        venv,
        "import importlib.util as u, sys, mint\n"
        "print(mint.Client.__module__, mint.AsyncClient.__module__, mint.__file__)\n"
        "print(*(u.find_spec(name) for name in sys.argv[1:]))",
        *NOT_IN_A_CLIENT,
    )
    assert found.split() == [
        "mint.client.sync",
        "mint.client.aio",
        str(site / "mint" / "__init__.py"),
        *["None"] * len(NOT_IN_A_CLIENT),
    ]
    _python(venv, IMPORT_ALL, "mint.client")
    helper = _python(
        venv,
        "import mint.client as c\n"
        "try:\n    c.load_adapter(None, 'acme/tone')\n"
        "except c.MissingExtra as exc:\n    print(exc)",
    )
    assert "pip install 'mint[serving]'" in helper
    (cli,) = _start(venv, CLIENT_SCRIPTS, cwd=tmp_path).values()  # the `mint` command
    assert "mint.cli_app.main" in cli and not {"torch", "kafka", "minio"} & cli


@pytest.mark.timeout(900)  # the first run installs the server dependencies' layer
def test_slim_install_runs_every_slim_service_without_torch(wheel: Path, tmp_path: Path) -> None:
    venv = tmp_path / "slim"
    site = _fresh_venv(venv, _slim_layer(), wheel, "mint[server]")
    where = _python(
        venv, "import mint, importlib.util as u; print(mint.__file__, u.find_spec('torch'))"
    )
    assert where.split() == [str(site / "mint" / "__init__.py"), "None"]
    _python(venv, IMPORT_ALL, *SLIM_PACKAGES)
    for script, modules in _start(venv, SLIM_SCRIPTS, cwd=tmp_path).items():
        assert SLIM_SCRIPTS[script] in modules and "torch" not in modules, script


def test_serving_install_runs_the_node_with_torch(wheel: Path, tmp_path: Path) -> None:
    own = Path(sysconfig.get_path("purelib"))
    assert not list(own.glob("mint-*.dist-info")), f"{own} has mint installed: uninstall it"
    venv = tmp_path / "serving"
    site = _fresh_venv(venv, own, wheel, "mint[serving]")
    where = _python(venv, "import importlib.util as u; print(u.find_spec('services').origin)")
    assert where.split() == [str(site / "services" / "__init__.py")]
    for script, modules in _start(venv, SERVING_SCRIPTS, cwd=tmp_path).items():
        assert SERVING_SCRIPTS[script] in modules, script
    # --help no longer imports torch (a node imports it once its settings and servers are
    # checked); what it serves with must import in this install.
    _python(venv, "import torch, peft, mint.serving.engine, services.inference.app, mint.training")


def test_make_venv_installs_every_extra_the_serving_layer_needs() -> None:
    """The serving layer is this environment: `make venv` installed it with every extra
    (the project's references to its own extras resolve to what is listed beside them)."""
    extras = PROJECT["optional-dependencies"]
    assert set(extras) >= {"server", "serving", "dev"}
    listed = {*PROJECT["dependencies"], *(r for extra in extras.values() for r in extra)}
    own = {r for r in listed if r.startswith("mint[")}
    assert own == {"mint[server]", "mint[server,serving]"}
    assert set(bootstrap.requirements()) == listed - own
