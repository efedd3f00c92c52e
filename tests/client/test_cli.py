"""The `mint` command against the real servers (typer's CliRunner): login, an adapter's
life, lists, evaluations, generation, `--json` for scripts, and refusals as one line with
what to do next and an exit code."""

from __future__ import annotations

import json
import re
import shlex
import socket
import stat
from functools import partial
from pathlib import Path
from typing import Any

import pytest
import typer

import mint
from mint.cli_app import app
from mint.client import Sampling
from mint.layout import ADAPTER_CONFIG, ADAPTER_WEIGHTS
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
        "error: principal 'alice' may not register base models — registering a base model "
        "needs an admin's token: `mint login --token ...` (or set MINT_TOKEN) (request id "
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


def test_publish_checks_the_folder_and_the_ref_before_uploading(
    world: ClientWorld, logged_in: Path, tmp_path: Path
) -> None:
    folder = tmp_path / "half-saved"
    folder.mkdir()
    (folder / ADAPTER_CONFIG).write_text("{}")
    missing = mint_command("adapter", "publish", "acme/cli-publish", str(folder))
    assert missing.exit_code == 2
    assert missing.stderr == (
        f"error: {folder} has no {ADAPTER_WEIGHTS}: give the folder PEFT's save_pretrained "
        "wrote — see `mint adapter publish --help`\n"
    )
    (folder / "adapter_model.bin").write_bytes(b"a pickle")
    pickled = mint_command("adapter", "publish", "acme/cli-publish", str(folder))
    assert pickled.exit_code == 2
    assert pickled.stderr == (
        f"error: {folder} holds adapter_model.bin, a pickle file, which MinT never loads: "
        "re-save the adapter with `save_pretrained(..., safe_serialization=True)` to write "
        f"{ADAPTER_WEIGHTS} — see `mint adapter publish --help`\n"
    )
    with world.client() as client, pytest.raises(ValueError, match="a pickle file"):
        client.publish_revision("acme/cli-publish", folder)  # the Python API checks it too
    no_slash = mint_command("adapter", "publish", "acme", str(world.lora("cli-slash", seed=3)))
    assert no_slash.exit_code == 2
    assert "'acme' is not an adapter ref: write TENANT/NAME" in " ".join(no_slash.stderr.split())
    assert "uploading" not in missing.output + pickled.output + no_slash.output


def test_a_not_found_hint_fits_what_was_not_found(world: ClientWorld, logged_in: Path) -> None:
    ref = "acme/cli-hints"
    mint_command("adapter", "create", ref, "--base", world.fingerprint)
    lora = str(world.lora("cli-hints", seed=5))
    revision_hint = "— `mint adapter show REF` lists its revisions"
    base_hint = "— check the fingerprint: `mint base register FOLDER` prints a folder's"
    refusals = [
        (mint_command("adapter", "publish", ref, lora, "--parent", "99"), revision_hint),
        (mint_command("adapter", "promote", ref, "stable", "99"), revision_hint),
        (mint_command("adapter", "create", "acme/cli-hints-2", "--base", "0" * 64), base_hint),
    ]
    for refused, hint in refusals:
        assert refused.exit_code == 3, refused.output
        refusal = refused.stderr.splitlines()[-1]  # after publish's upload bar
        assert hint in refusal and "mint adapter ls" not in refused.stderr
        assert refusal.startswith("error: ")
    assert "has no revision 99" in refusals[0][0].stderr


def test_an_address_that_does_not_answer_is_named_with_how_to_fix_it(
    world: ClientWorld, logged_in: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    malformed = mint_command("adapter", "show", "acme/x", env={"MINT_REGISTRY": "garbage::::"})
    assert malformed.exit_code == 2
    assert malformed.stderr == (
        "error: the registry address 'garbage::::' is not HOST:PORT (or several, a,b): "
        "fix it with `mint login --registry HOST:PORT` (or set MINT_REGISTRY)\n"
    )
    stored = mint_command("login", "--registry", "garbage::::", "--token", "t")
    assert stored.exit_code == 2 and "HOST:PORT" in stored.output
    assert json.loads(logged_in.read_text())["registry"] == world.registry  # kept

    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        closed = f"127.0.0.1:{probe.getsockname()[1]}"
    monkeypatch.setattr(mint, "Client", partial(mint.Client, retry_for_s=0.5))
    unreachable = mint_command("adapter", "show", "acme/x", env={"MINT_REGISTRY": closed})
    assert unreachable.exit_code == 6
    assert len(unreachable.stderr.splitlines()) == 1
    assert unreachable.stderr.endswith(
        f" — try again in a moment; if it keeps failing, check that the registry at {closed} "
        "is up and the address is right: `mint login --registry HOST:PORT` (or set MINT_REGISTRY)\n"
    )


def _help_texts(command: Any, path: list[str]) -> list[tuple[list[str], str]]:
    """Every help text of `command` (a click command: typer's own click in some versions,
    so known by what it carries) and its subcommands: (the command's words, the text)."""
    texts = [command.help or "", command.epilog or ""]
    texts += [getattr(p, "help", None) or "" for p in command.params]
    found = [(path, text) for text in texts if text]
    for name, sub in getattr(command, "commands", {}).items():
        found += _help_texts(sub, [*path, name])
    return found


def test_no_help_text_loses_its_brackets_to_the_formatter() -> None:
    """Help is rendered as markdown: `<revision>` would vanish as an HTML tag."""
    swallowed = []
    for path, text in _help_texts(typer.main.get_command(app), []):
        shown = " ".join(mint_command(*path, "--help", env={"COLUMNS": "2000"}).stdout.split())
        for word in text.replace("`", "").split():
            if any(c in word for c in "<>[]") and word not in shown:
                swallowed.append((" ".join(path), word))
    assert swallowed == []
