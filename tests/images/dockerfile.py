"""Just enough of a Dockerfile reader to check deploy/images/Dockerfile without building
it: stages, their instructions (continuation lines joined, comments dropped), the
stage each one builds on, its ARG defaults, LABELs and EXPOSEd ports."""

from __future__ import annotations

import shlex
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
DOCKERFILE_PATH = REPO / "deploy" / "images" / "Dockerfile"


@dataclass(frozen=True)
class Instruction:
    keyword: str  # upper case: RUN, COPY, ...
    args: str


@dataclass
class Stage:
    name: str
    base: str  # an image reference, or the name of an earlier stage
    instructions: list[Instruction] = field(default_factory=list)

    def all(self, keyword: str) -> list[str]:
        return [i.args for i in self.instructions if i.keyword == keyword]


@dataclass
class Dockerfile:
    global_args: dict[str, str]  # ARGs before the first FROM, with their defaults
    stages: dict[str, Stage]

    def ancestry(self, name: str) -> list[Stage]:
        """The stage and every stage it builds on, nearest first."""
        chain = [self.stages[name]]
        while chain[-1].base in self.stages:
            chain.append(self.stages[chain[-1].base])
        return chain

    def external_base(self, name: str) -> str:
        """The image the stage finally builds on, its ARGs filled in."""
        base = self.ancestry(name)[-1].base
        for arg, default in self.global_args.items():
            base = base.replace("${" + arg + "}", default)
        return base

    def arg_default(self, name: str, arg: str) -> str:
        for stage in self.ancestry(name):
            for text in stage.all("ARG"):
                key, _, default = text.partition("=")
                if key == arg:
                    return shlex.split(default)[0] if default.strip('"') else ""
        raise KeyError(f"no ARG {arg} in stage {name} or below")

    def labels(self, name: str) -> dict[str, str]:
        """The stage's labels, a stage's own overriding those it builds on."""
        found: dict[str, str] = {}
        for stage in reversed(self.ancestry(name)):
            for text in stage.all("LABEL"):
                found |= dict(pair.split("=", 1) for pair in shlex.split(text))
        return found

    def exposed(self, name: str) -> set[int]:
        return {
            int(port.split("/")[0])
            for stage in self.ancestry(name)
            for text in stage.all("EXPOSE")
            for port in text.split()
        }

    def copied_sources(self, name: str) -> list[str]:
        """What the stage COPYs from the build context (not --from another stage)."""
        sources = []
        for text in self.stages[name].all("COPY"):
            words = shlex.split(text)
            if not any(w.startswith("--from") for w in words):
                sources += [w for w in words[:-1] if not w.startswith("--")]
        return sources


def _logical_lines(text: str) -> list[str]:
    lines, pending = [], ""
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue  # comments may sit between continuation lines too
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        lines.append(pending + line)
        pending = ""
    return lines


def parse(path: Path = DOCKERFILE_PATH) -> Dockerfile:
    result = Dockerfile({}, {})
    stage: Stage | None = None
    for line in _logical_lines(path.read_text()):
        keyword, _, args = line.partition(" ")
        keyword, args = keyword.upper(), " ".join(args.split())
        if keyword == "FROM":
            words = args.split()
            if len(words) != 3 or words[1].upper() != "AS":
                raise ValueError(f"{path}: name every stage (FROM image AS name): {line}")
            stage = Stage(name=words[2], base=words[0])
            result.stages[stage.name] = stage
        elif stage is None:
            if keyword != "ARG":
                raise ValueError(f"{path}: only ARG may come before the first FROM: {line}")
            key, _, default = args.partition("=")
            result.global_args[key] = default
        else:
            stage.instructions.append(Instruction(keyword, args))
    return result
