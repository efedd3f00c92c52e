"""README.md's "Using MinT from Python" snippets, run as written against the test servers:
only the addresses, the token, the folders and the adapter's name are replaced."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from mint.models.base import build_base
from tests.serving.world import base_config

from .conftest import ADMIN, ClientWorld

README = Path(__file__).resolve().parents[2] / "README.md"
SECTION = "## Using MinT from Python"


def snippets() -> list[str]:
    text = README.read_text()
    section = text[text.index(SECTION) :]
    section = section[: section.index("\n## ", len(SECTION))]
    return re.findall(r"```python\n(.*?)```", section, re.DOTALL)


def test_the_readme_snippets_run_as_written(
    world: ClientWorld,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    base = tmp_path / "my-base"
    build_base(base_config(), seed=0).save_pretrained(base)  # the base the node serves
    replaced = {
        "127.0.0.1:50051": world.registry,
        "127.0.0.1:50060": world.router,
        "s3cret": ADMIN,  # the README's token is an admin's
        '"my-base"': repr(str(base)),
        '"my-lora"': repr(str(world.lora("my-lora", seed=9))),
        "acme/tone": "acme/readme",
    }
    register, generate, generate_async, load = snippets()
    for old, new in replaced.items():
        assert old in register + generate + generate_async, f"the README no longer says {old}"
        register, generate, generate_async = (
            s.replace(old, new) for s in (register, generate, generate_async)
        )
    scope: dict[str, object] = {}
    exec(register, scope)
    world.project()
    capsys.readouterr()
    exec(generate, scope)
    streamed = capsys.readouterr().out
    exec(generate_async, scope)
    replied = capsys.readouterr().out
    missing = "adapter acme/missing does not exist\n"
    assert streamed.endswith(missing) and len(streamed) > len(missing)  # text, then the error
    assert replied.endswith(" 1 client-node\n") and len(replied) > len(" 1 client-node\n")
    # The stored login's place taken by the variables; the cache in this test's folder.
    for name, value in {
        "MINT_REGISTRY": world.registry,
        "MINT_TOKEN": ADMIN,
        "MINT_ADAPTER_CACHE": str(tmp_path / "cache"),
    }.items():
        monkeypatch.setenv(name, value)
    scope["base_model"] = build_base(base_config(), seed=0)
    exec(load.replace("acme/tone", "acme/readme"), scope)
    assert (scope["folder"] / "adapter_model.safetensors").is_file()  # type: ignore[operator]
    assert type(scope["model"]).__name__ == "PeftModel"
