"""README.md's "Quickstart" (with the installed wheel's `mint`) and "Using MinT from
Python" snippets, run as written against the test servers: only the addresses, the token,
the folders and the adapter's name are replaced."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest

from mint.models.base import build_base
from tests.serving.world import base_config

from .conftest import ADMIN, ALICE, ClientWorld
from .installed import InstalledClient, output

README = Path(__file__).resolve().parents[2] / "README.md"
SECTION = "## Using MinT from Python"


def test_the_quickstart_runs_with_the_installed_wheel(
    world: ClientWorld, installed_client: InstalledClient
) -> None:
    """Six commands from `pip install` to a generation. The install is the fixture's: the
    wheel the README names, built afresh and installed into a new virtualenv (offline over
    the core dependencies, tests/client/installed.py); the rest run as its `mint`."""
    text = README.read_text()
    section = text[text.index("## Quickstart") :]
    (session,) = re.findall(r"```bash\n(.*?)```", section[: section.index("\n## ", 5)], re.DOTALL)
    lines = [shlex.split(line, comments=True) for line in session.splitlines()]
    assert len(lines) <= 6 and lines[0][:2] == ["pip", "install"]
    assert lines[0][2:] == [f"dist/{installed_client.wheel.name}"]
    assert (installed_client.site / "mint" / "__init__.py").is_file()
    replaced = {
        "127.0.0.1:50051": world.registry,
        "127.0.0.1:50060": world.router,
        "s3cret": ALICE,
        "./my-lora": str(world.lora("quickstart", seed=61)),
        "$FINGERPRINT": world.fingerprint,
        "acme/tone": "acme/quickstart",
        "acme/tone@stable": "acme/quickstart@stable",
    }
    for words in lines[1:]:
        assert words[0] == "mint"
        if words[1] == "generate":
            world.project()  # what the live projector would have written by now
        result = installed_client.mint(*(replaced.get(word, word) for word in words[1:]))
        assert result.returncode == 0, output(result)
    assert result.stdout.strip()  # the generation


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
