"""The `mint` command against the real servers (typer's CliRunner): login, an adapter's
life, lists, evaluations, generation, `--json` for scripts, and refusals as one line with
what to do next and an exit code."""

from __future__ import annotations

import json
import re
import shlex
import stat
from pathlib import Path

import pytest

from mint.client import Sampling
from mint.models.base import build_base
from tests.serving.world import base_config

from .conftest import ADMIN, ALICE, EVE, ClientWorld, Served, mint_command

README = Path(__file__).resolve().parents[2] / "README.md"


def test_login_stores_the_token_for_the_user_alone(world: ClientWorld, logged_in: Path) -> None:
    assert stat.S_IMODE(logged_in.stat().st_mode) == 0o600
    assert json.loads(logged_in.read_text()) == {
        "registry": world.registry,
        "router": world.router,
        "token": ALICE,
    }
    overridden = mint_command("adapter", "show", "acme/anything", env={"MINT_TOKEN": "wrong"})
    assert overridden.exit_code == 4
    assert overridden.stderr.startswith("error: unknown or revoked token")
    assert overridden.stderr.endswith(
        " — log in with a valid token: `mint login` (or set MINT_TOKEN)\n"
    )


def test_an_adapter_from_creation_to_archive(world: ClientWorld, logged_in: Path) -> None:
    ref = "acme/cli-life"
    created = mint_command(
        "adapter", "create", ref, "--base", world.fingerprint, "--label", "kind=tone", "--json"
    )
    assert created.exit_code == 0, created.output
    assert json.loads(created.stdout)["adapter"]["labels"] == {"kind": "tone"}

    folder = world.lora("cli-life", seed=21)
    published = mint_command("adapter", "publish", ref, str(folder), "--training-run", "r1")
    assert published.exit_code == 0, published.output
    assert f"published {ref} revision 1; {ref} is at version 3" in published.stdout
    second = mint_command("adapter", "publish", ref, str(folder), "--parent", "1")
    assert second.exit_code == 0, second.output

    steps = [
        ("adapter", "promote", ref, "stable", "1"),
        ("adapter", "promote", ref, "stable", "2", "--reason", "better"),
        ("eval", "record", ref, "2", "tone", "--metric", "accuracy=0.9", "--passed"),
        ("adapter", "rollback", ref, "stable"),
    ]
    outputs = []
    for step in steps:
        result = mint_command(*step)
        assert result.exit_code == 0, result.output
        outputs.append(result.stdout)
    assert outputs[2].strip() == f"{ref} revision 2 passed tone"
    assert outputs[3].startswith("stable -> revision 1;")

    shown = json.loads(mint_command("adapter", "show", ref, "--json").stdout)
    assert shown["channels"] == {"stable": 1, "latest": 2}
    assert [r["parents"] for r in shown["revisions"]] == [[], [1]]
    assert shown["revisions"][1]["evaluations"][0]["metrics"] == {"accuracy": 0.9}
    text = mint_command("adapter", "show", ref).stdout
    assert "channels latest=2, stable=1" in text and "tone:pass" in text

    history = mint_command("adapter", "history", ref, "--json")
    events = json.loads(history.stdout)
    assert [e["stream_version"] for e in events] == list(range(1, len(events) + 1))
    assert events[-1]["payload"] == {
        "channel": "stable",
        "previous_revision": 2,
        "reason": "rollback",
        "revision": 1,
    }
    table = mint_command("adapter", "history", ref).stdout
    assert "AdapterCreated" in table and "reason=better" in table

    archived = mint_command("adapter", "archive", ref, "--request-id", "cli-archive", "--json")
    assert json.loads(archived.stdout)["request_id"] == "cli-archive"
    again = mint_command("adapter", "archive", ref, "--request-id", "cli-archive")
    assert "already applied" in again.stdout and again.exit_code == 0
    refused = mint_command("adapter", "promote", ref, "stable", "2", "--request-id", "late")
    assert refused.exit_code == 1
    assert "archived" in refused.stderr and "--request-id late" in refused.stderr
    assert "Traceback" not in refused.output


def test_base_register_hashes_the_folder_as_a_node_does(
    world: ClientWorld, logged_in: Path, tmp_path: Path
) -> None:
    folder = tmp_path / "cli-base"
    build_base(base_config(), seed=0).save_pretrained(folder)
    registered = mint_command("base", "register", str(folder), "--json", env={"MINT_TOKEN": ADMIN})
    assert registered.exit_code == 0, registered.output
    assert json.loads(registered.stdout)["fingerprint"] == world.fingerprint
    not_admin = mint_command("base", "register", str(folder))
    assert not_admin.exit_code == 4
    assert not_admin.stderr.splitlines()[-1].startswith(
        "error: principal 'alice' may not register base models — use a token"
    )


def test_ls_walks_every_page(world: ClientWorld, logged_in: Path) -> None:
    with world.client() as client:
        for i in range(3):
            client.create_adapter(f"acme/cli-ls-{i}", world.fingerprint, labels={"ls": "yes"})
    world.project()
    listed = mint_command("adapter", "ls", "acme", "--label", "ls=yes", "--page-size", "2")
    assert listed.exit_code == 0, listed.output
    assert [line.split("\t")[0] for line in listed.stdout.splitlines()] == [
        f"acme/cli-ls-{i}" for i in range(3)
    ]
    as_json = mint_command("adapter", "ls", "acme", "--label", "ls=yes", "--json")
    assert [a["ref"] for a in json.loads(as_json.stdout)] == [f"acme/cli-ls-{i}" for i in range(3)]


def test_generate_streams_what_the_client_generates(
    world: ClientWorld, served: Served, logged_in: Path
) -> None:
    with world.client() as client:
        expected = client.generate("hello", f"{served.ref}@stable", Sampling(max_new_tokens=8))
    args = ("generate", "hello", "--adapter", f"{served.ref}@stable", "--max-new-tokens", "8")
    streamed = mint_command(*args)
    assert streamed.exit_code == 0, streamed.output
    assert streamed.stdout == expected.text + "\n"
    answer = json.loads(mint_command(*args, "--json").stdout)
    assert answer["tokens"] == list(expected.tokens)
    assert answer["adapters"][0]["revision"] == 1 and answer["node"] == expected.node
    made = answer["provenance"]  # a greedy request without a seed still names the drawn one
    assert made["response_id"] and made["adapters"] == answer["adapters"]
    assert streamed.stderr.startswith("response ") and "(seed " in streamed.stderr


def test_refusals_are_one_line_with_the_next_step_and_an_exit_code(
    world: ClientWorld, logged_in: Path
) -> None:
    missing = mint_command("adapter", "show", "acme/missing")
    assert (missing.exit_code, missing.stdout) == (3, "")
    assert missing.stderr == (
        "error: adapter acme/missing does not exist — check the name: "
        "`mint adapter ls TENANT` lists a tenant's adapters\n"
    )
    other = mint_command("adapter", "show", "acme/missing", env={"MINT_TOKEN": EVE})
    assert other.exit_code == 4 and "use a token of this tenant" in other.stderr
    mint_command("adapter", "create", "acme/cli-taken", "--base", world.fingerprint)
    taken = mint_command(
        "adapter", "create", "acme/cli-taken", "--base", world.fingerprint, "--request-id", "t-1"
    )
    assert taken.exit_code == 5
    assert "choose another" in taken.stderr and "--request-id t-1" in taken.stderr
    bad_selector = mint_command("generate", "hi", "--adapter", "no-slash")
    assert bad_selector.exit_code == 2 and "names no adapter" in bad_selector.stderr
    bad_label = mint_command("adapter", "create", "acme/x", "--base", "f", "--label", "oops")
    assert bad_label.exit_code == 2 and "KEY=VALUE" in bad_label.output
    for result in (missing, other, taken, bad_selector):
        assert len(result.stderr.splitlines()) == 1 and "Traceback" not in result.output


def test_a_command_without_a_login_says_how_to_log_in(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path))
    for name in ("MINT_REGISTRY", "MINT_ROUTER", "MINT_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    result = mint_command("adapter", "show", "acme/tone")
    assert result.exit_code == 2
    assert result.stderr == "error: no token: run `mint login` (or set MINT_TOKEN)\n"


@pytest.mark.parametrize(
    "command",
    [
        ["login"],
        ["base", "register"],
        ["eval", "record"],
        ["generate"],
        *(["audit", name] for name in ("verify", "replay", "provenance")),
        *(["stack", name] for name in ("up", "down", "status", "env")),
        *(
            ["adapter", name]
            for name in (
                "create",
                "publish",
                "promote",
                "rollback",
                "archive",
                "show",
                "history",
                "ls",
                "pull",
            )
        ),
    ],
)
def test_every_command_explains_itself_with_an_example(command: list[str]) -> None:
    result = mint_command(*command, "--help")
    assert result.exit_code == 0 and "Example: mint " in result.stdout
    assert ("--json" in result.stdout) and ("--request-id" in result.stdout) == (
        command[-1]
        not in {
            "login",
            "generate",
            "show",
            "history",
            "ls",
            "pull",
            "verify",
            "replay",
            "provenance",
            "up",
            "down",
            "status",
            "env",
        }
    )


def test_the_readme_session_runs_as_written(
    world: ClientWorld, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """README's "The mint command" session, line by line: only the addresses, the token,
    the folders, the fingerprint and the adapter's name are replaced."""
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    base = tmp_path / "my-base"
    build_base(base_config(), seed=0).save_pretrained(base)
    replaced = {
        "127.0.0.1:50051": world.registry,
        "127.0.0.1:50060": world.router,
        "s3cret": ADMIN,
        "./my-base": str(base),
        "./my-lora": str(world.lora("readme-cli", seed=31)),
        "$FINGERPRINT": world.fingerprint,
        "acme/tone": "acme/readme-cli",
        "acme/tone@stable": "acme/readme-cli@stable",
    }
    text = README.read_text()
    section = text[text.index("## The mint command") :]
    session = re.findall(r"```bash\n(.*?)```", section[: section.index("\n## ", 5)], re.DOTALL)[0]
    lines = [shlex.split(line, comments=True) for line in session.splitlines()]
    assert len(lines) == 6
    for words in lines:
        assert words[0] == "mint"
        if words[1] == "generate":
            world.project()  # what the live projector would have written by now
        result = mint_command(*(replaced.get(word, word) for word in words[1:]))
        assert result.exit_code == 0, f"{words}: {result.output}"
    assert result.stdout.strip()  # the generation
