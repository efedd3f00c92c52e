"""The bare `mint` install, made as a user makes it: the wheel freshly built from this
checkout, installed into a new virtualenv with nothing but the core dependencies (a layer
installed once per dependency list and reused, as tests/images does: pip resolves `mint`
offline against it, so the install succeeds only if the core dependencies are all it
needs), and its `mint` command run as a program: no PYTHONPATH, a working directory
outside the repository, a config dir and an adapter cache of its own."""

from __future__ import annotations

import os
import subprocess
from dataclasses import dataclass
from pathlib import Path

from tests.images.test_wheel import PROJECT, _clean_env, _fresh_venv, _layer, build_wheel

SECONDS = 120
# What a user's shell might carry that would point `mint` elsewhere.
LOGIN_VARIABLES = ("MINT_REGISTRY", "MINT_ROUTER", "MINT_TOKEN")


@dataclass(frozen=True)
class InstalledClient:
    venv: Path
    site: Path  # its site-packages, where `mint` was installed
    wheel: Path
    home: Path  # the working directory, config dir and adapter cache live here

    def env(self, extra: dict[str, str] | None = None) -> dict[str, str]:
        env = {k: v for k, v in _clean_env().items() if k not in LOGIN_VARIABLES}
        env |= {
            "XDG_CONFIG_HOME": str(self.home / "config"),
            "MINT_ADAPTER_CACHE": str(self.home / "cache"),
            "COLUMNS": "200",  # tables and errors on one line each
        }
        return env | (extra or {})

    def mint(
        self, *args: str, env: dict[str, str] | None = None
    ) -> subprocess.CompletedProcess[str]:
        """The installed `mint` command with `args`."""
        return subprocess.run(
            [str(self.venv / "bin" / "mint"), *args],
            cwd=self.home,
            env=self.env(env),
            capture_output=True,
            text=True,
            timeout=SECONDS,
        )

    def python(self, code: str) -> str:
        result = subprocess.run(
            [str(self.venv / "bin" / "python"), "-c", code],
            cwd=self.home,
            env=self.env(),
            capture_output=True,
            text=True,
            timeout=SECONDS,
        )
        assert result.returncode == 0, result.stderr
        return result.stdout


def install_client(root: Path) -> InstalledClient:
    """Build the wheel under `root` and install it bare into a fresh virtualenv there."""
    for name in ("src", "dist", "home"):
        (root / name).mkdir()
    wheel = build_wheel(root / "src", root / "dist")
    layer = _layer("client", PROJECT["dependencies"])
    site = _fresh_venv(root / "venv", layer, wheel, "mint")
    return InstalledClient(root / "venv", site, wheel, root / "home")


def output(result: subprocess.CompletedProcess[str]) -> str:
    command = " ".join(map(os.fspath, result.args))
    return f"{command} -> {result.returncode}\n{result.stdout}{result.stderr}"
