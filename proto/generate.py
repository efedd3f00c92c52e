"""Generate the Python code for proto/ into mint/v1 (or --out DIR, for the drift check).

Generated files are committed and never edited by hand; tests/test_proto.py regenerates
them into a temporary folder and fails if anything differs from what is committed.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

PROTO_ROOT = Path(__file__).resolve().parent
REPO_ROOT = PROTO_ROOT.parent


def proto_files() -> list[Path]:
    return sorted(PROTO_ROOT.rglob("*.proto"))


def generate(out: Path) -> list[Path]:
    """Run protoc on every file under proto/; return the generated files."""
    from grpc_tools import protoc  # dev dependency: imported only when generating

    bin_dir = Path(sys.executable).parent
    include = Path(protoc.__file__).parent / "_proto"
    out.mkdir(parents=True, exist_ok=True)
    args = [
        "protoc",
        f"-I{PROTO_ROOT}",
        f"-I{include}",
        f"--plugin=protoc-gen-mypy={bin_dir / 'protoc-gen-mypy'}",
        f"--plugin=protoc-gen-mypy_grpc={bin_dir / 'protoc-gen-mypy_grpc'}",
        f"--python_out={out}",
        f"--grpc_python_out={out}",
        f"--mypy_out={out}",
        f"--mypy_grpc_out={out}",
        *(str(p.relative_to(PROTO_ROOT)) for p in proto_files()),
    ]
    if protoc.main(args) != 0:
        raise SystemExit("protoc failed; see the messages above")
    for package in {p.parent for p in out.rglob("*_pb2.py")}:
        (package / "__init__.py").touch()
    return sorted(p for p in out.rglob("*") if p.is_file())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", type=Path, default=REPO_ROOT, help="output root (default: repo)")
    args = parser.parse_args()
    for path in generate(args.out):
        if "_pb2" in path.name:
            print(path.relative_to(args.out))


if __name__ == "__main__":
    main()
