"""Create the cached virtualenv and install what pyproject.toml lists (stdlib only):
the core dependencies and every extra (`server`, `serving`, `dev`, ...), everything the
tests import.

Runs with the system python3 before anything else is installed. The venv lives in the
download cache ($MINT_CACHE, default ~/.cache/mint) so fresh clones reuse it; it is
re-synced only when pyproject.toml's dependency lists change.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import subprocess
import tomllib
import venv
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def requirements() -> list[str]:
    """The core dependencies and every extra's, in the file's order, once each. An extra
    naming the project's own extras (`mint[server]`) is left out: what it names is listed
    here already, and pip would look for a `mint` on the index."""
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    listed = [*project["dependencies"]]
    for extra in project["optional-dependencies"].values():
        listed += extra
    own = f"{project['name']}["
    return [r for r in dict.fromkeys(listed) if not r.startswith(own)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--venv", type=Path, required=True)
    args = parser.parse_args()
    reqs = requirements()
    stamp = args.venv / "mint-requirements.json"
    if stamp.exists() and json.loads(stamp.read_text()) == reqs:
        return
    python = args.venv / "bin" / "python"
    if not python.exists():
        print(f"creating virtualenv {args.venv}", flush=True)
        venv.create(args.venv, with_pip=True)
    print("installing dependencies (torch is large: the first time takes minutes)", flush=True)
    pip = [
        str(python),
        "-m",
        "pip",
        "install",
        "--disable-pip-version-check",
        "--progress-bar",
        "off",
    ]
    subprocess.run([*pip, "--upgrade", "pip"], check=True)
    subprocess.run([*pip, *reqs], check=True)
    stamp.write_text(json.dumps(reqs))
    digest = hashlib.sha256(json.dumps(reqs).encode()).hexdigest()[:12]
    print(f"virtualenv ready ({digest})", flush=True)


if __name__ == "__main__":
    main()
