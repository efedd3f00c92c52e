"""The pinned kustomize, built from the Go module proxy into the download cache.

  python3 deploy/k8s/kustomize.py     install it if missing (needs `go`), print its path

Stdlib only: `make test` runs it with the system python3, like deploy/local/bootstrap.py.
The binary lives in $MINT_CACHE/bin/kustomize-<version>/ (default ~/.cache/mint), so a
version bump installs beside the old one and fresh clones reuse it.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

MODULE = "sigs.k8s.io/kustomize/kustomize/v5"
VERSION = "v5.8.1"  # builds with the Go this project's machines have (1.26)


class KustomizeError(RuntimeError):
    """kustomize could not be installed, or a build failed (the message says why)."""


def binary() -> Path:
    cache = Path(os.environ.get("MINT_CACHE") or Path.home() / ".cache" / "mint")
    return cache / "bin" / f"kustomize-{VERSION}" / "kustomize"


def ensure() -> Path:
    """The kustomize binary, built first if it is not there yet (about two minutes)."""
    path = binary()
    if path.exists():
        return path
    go = shutil.which("go")
    if go is None:
        raise KustomizeError(
            f"kustomize {VERSION} is not installed and there is no `go` to build it: "
            f"install Go (1.24 or newer), or put a kustomize {VERSION} binary at {path}"
        )
    print(f"building kustomize {VERSION} from the Go module proxy into {path.parent}", flush=True)
    # GOTOOLCHAIN=local: build with the Go that is installed, never fetch another one.
    env = {**os.environ, "GOBIN": str(path.parent), "GOTOOLCHAIN": "local", "CGO_ENABLED": "0"}
    built = subprocess.run([go, "install", f"{MODULE}@{VERSION}"], env=env, check=False)
    if built.returncode != 0:
        raise KustomizeError(f"`go install {MODULE}@{VERSION}` failed (its output is above)")
    return path


def build(directory: Path) -> str:
    """`kustomize build` of a base or overlay: the rendered YAML (KustomizeError with
    kustomize's own message if it fails)."""
    result = subprocess.run(
        [str(ensure()), "build", str(directory)], capture_output=True, text=True, check=False
    )
    if result.returncode != 0:
        raise KustomizeError(f"kustomize build {directory} failed:\n{result.stderr}")
    return result.stdout


if __name__ == "__main__":
    try:
        print(ensure())
    except KustomizeError as exc:
        sys.exit(f"error: {exc}")
