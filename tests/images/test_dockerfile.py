"""deploy/images/Dockerfile, checked without a container runtime: what each image is
built on, who it runs as, what it installs and which ports it declares.
(tests/images/test_wheel.py installs the same wheel as the images do and runs it.)"""

from __future__ import annotations

import re
import shlex
import subprocess
import sysconfig
import tomllib
from pathlib import Path

import pytest

from .dockerfile import DOCKERFILE_PATH, REPO, parse

PROJECT = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
DOCKERFILE = parse()

# The services' default ports (DESIGN.md §6, Packaging and images).
GRPC = {"registry": 50051, "router": 50060, "node": 50061}
HTTP = {"router": 8080}  # the router's OpenAI-compatible API
METRICS = {
    "projector": 9464,
    "router": 9465,
    "node": 9466,
    "controller": 9467,
    "registry": 9468,
    "evaluator": 9469,
}
# Each image and what it runs: its extra of the wheel and the ports it must declare.
IMAGES = {
    "mint": ("[server]", {"registry", "projector", "controller", "router"}),
    "mint-serving": ("[serving]", {"node", "evaluator"}),
}
COMPILERS = re.compile(r"\b(gcc|g\+\+|clang|cc|make|build-essential|cmake|rustc|cargo)\b")


def _ports(services: set[str]) -> set[int]:
    return {
        p for s in services for p in (GRPC.get(s), HTTP.get(s), METRICS.get(s)) if p is not None
    }


def test_the_base_image_is_pinned_to_a_python_patch_release() -> None:
    for name in DOCKERFILE.stages:
        base = DOCKERFILE.external_base(name)
        pinned = re.fullmatch(r"python:3\.11\.\d+-slim-[a-z]+(@sha256:[0-9a-f]{64})?", base)
        assert pinned, f"stage {name} builds on {base!r}: pin python:3.11.<patch>-slim-<debian>"


@pytest.mark.parametrize("image", IMAGES)
def test_the_image_runs_as_a_fixed_non_root_user(image: str) -> None:
    user = DOCKERFILE.stages[image].all("USER")[-1]
    uid, _, gid = user.partition(":")
    assert uid.isdigit() and int(uid) >= 1000 and gid == uid, user
    creates = " ".join(s.args for st in DOCKERFILE.ancestry(image) for s in st.instructions)
    assert f"--uid {uid}" in creates, f"no user with uid {uid} is created"


@pytest.mark.parametrize("image", IMAGES)
def test_the_image_installs_the_built_wheel_with_its_extra(image: str) -> None:
    extra, _ = IMAGES[image]
    runs = [r for r in DOCKERFILE.stages[image].all("RUN") if "from=builder" in r]
    assert len(runs) == 1, f"{image}: install the wheel from the builder stage in one RUN"
    words = shlex.split(runs[0].replace(";", " ; ").replace("&&", " && "))
    installs = [i for i, w in enumerate(words) if w == "install" and words[i - 1] == "pip"]
    wheel_install = words[installs[-1] + 1 : words.index("&&", installs[-1])]
    assert wheel_install == ["--only-binary=:all:", "${wheel}" + extra], wheel_install
    for i in installs:  # every pip install here takes binary wheels only: nothing compiles
        assert words[i + 1] == "--only-binary=:all:", words[i : i + 3]
    assert "pip check" in runs[0]


@pytest.mark.parametrize("image", IMAGES)
def test_the_image_declares_its_services_default_ports(image: str) -> None:
    _, services = IMAGES[image]
    assert DOCKERFILE.exposed(image) == _ports(services)


@pytest.mark.parametrize("image", IMAGES)
def test_no_compiler_is_installed_into_the_image(image: str) -> None:
    for stage in DOCKERFILE.ancestry(image):
        for run in stage.all("RUN"):
            if re.search(r"apt-get install|apk add|dnf install|yum install", run):
                assert not COMPILERS.search(run), f"{stage.name} installs a compiler: {run}"


@pytest.mark.parametrize("image", IMAGES)
def test_oci_labels_name_the_image_and_its_version(image: str) -> None:
    labels = DOCKERFILE.labels(image)
    assert labels["org.opencontainers.image.title"] == image
    assert labels["org.opencontainers.image.version"] == "${VERSION}"
    assert DOCKERFILE.arg_default(image, "VERSION") == PROJECT["version"]
    assert labels["org.opencontainers.image.licenses"] == PROJECT["license"]
    assert labels["org.opencontainers.image.source"].startswith("https://")


def test_the_build_context_holds_exactly_what_the_builder_copies() -> None:
    lines = (REPO / ".dockerignore").read_text().splitlines()
    rules = [line for line in lines if line and not line.startswith("#")]
    assert rules[0] == "*", "the context admits only what is listed (allow-list)"
    admitted = {r[1:] for r in rules if r.startswith("!")}
    assert admitted == set(DOCKERFILE.copied_sources("builder"))


def test_hadolint_finds_nothing() -> None:
    """A real Dockerfile parser and linter (syntax, shell and best-practice rules)."""
    hadolint = Path(sysconfig.get_path("scripts")) / "hadolint"
    result = subprocess.run(
        [hadolint, "--no-color", DOCKERFILE_PATH], capture_output=True, text=True
    )
    assert result.returncode == 0, result.stdout + result.stderr
