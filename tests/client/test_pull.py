"""`mint.pull`, `mint.load_adapter` and `mint adapter pull` against the real servers: a
published revision comes back through the registry's DownloadWeights as a PEFT folder that
loads with the original's outputs, from a cache that notices a file altered on disk."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
import torch
from peft import PeftModel
from typer.testing import CliRunner, Result

import mint
from mint.cli_app import app
from mint.layout import ADAPTER_CONFIG, ADAPTER_WEIGHTS
from mint.models.base import build_base
from tests.serving.world import base_config

from .conftest import ALICE, EVE, ClientWorld, Served


def _logits(model: torch.nn.Module) -> torch.Tensor:
    with torch.no_grad():
        return model(torch.tensor([[5, 17, 99, 3]])).logits  # type: ignore[no-any-return]


def _errors(result: Result) -> list[str]:
    """The command's own error lines (the in-process node's threads log to stderr too)."""
    return [line for line in result.stderr.splitlines() if line.startswith("error: ")]


def test_a_pulled_adapter_loads_with_the_originals_outputs(
    world: ClientWorld, served: Served, tmp_path: Path
) -> None:
    original = world.root / "served"  # the folder `served` published
    with world.client() as client:
        folder = mint.pull(f"{served.ref}@stable", client=client, cache_dir=tmp_path)
        loaded = mint.load_adapter(
            build_base(base_config(), seed=0), served.ref, client=client, cache_dir=tmp_path
        ).eval()
    assert folder == tmp_path / "revisions" / "acme" / "served" / "1"
    weights = (original / ADAPTER_WEIGHTS).read_bytes()
    assert (folder / ADAPTER_WEIGHTS).read_bytes() == weights
    assert (folder / ADAPTER_WEIGHTS).resolve().name == hashlib.sha256(weights).hexdigest()
    assert json.loads((folder / ADAPTER_CONFIG).read_text())["r"] == 4
    expected = PeftModel.from_pretrained(build_base(base_config(), seed=0), str(original)).eval()
    assert torch.equal(_logits(loaded), _logits(expected))
    assert not torch.equal(_logits(loaded), _logits(build_base(base_config(), seed=0).eval()))


def test_a_corrupted_cache_file_is_fetched_again(
    world: ClientWorld, served: Served, tmp_path: Path
) -> None:
    with world.client() as client:
        folder = mint.pull(f"{served.ref}@1", client=client, cache_dir=tmp_path)
        blob = (folder / ADAPTER_WEIGHTS).resolve()
        good = blob.read_bytes()
        blob.write_bytes(good[:-8] + b"\x00" * 8)  # altered on disk
        again = mint.pull(f"{served.ref}@1", client=client, cache_dir=tmp_path)
    assert again == folder and (again / ADAPTER_WEIGHTS).read_bytes() == good


def test_pull_is_refused_for_another_tenant_and_an_unknown_revision(
    world: ClientWorld, served: Served, tmp_path: Path
) -> None:
    with world.client(EVE) as eve, world.client() as alice:
        with pytest.raises(mint.PermissionDenied):
            mint.pull(served.ref, client=eve, cache_dir=tmp_path)
        with pytest.raises(mint.NotFound, match="revision"):
            mint.pull(f"{served.ref}@99", client=alice, cache_dir=tmp_path)
    assert not (tmp_path / "blobs").exists()


def test_mint_adapter_pull_writes_a_peft_folder(
    world: ClientWorld, served: Served, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MINT_ADAPTER_CACHE", str(tmp_path / "cache"))
    env = {"MINT_REGISTRY": world.registry, "MINT_TOKEN": ALICE}
    runner = CliRunner()
    target = tmp_path / "tone"
    pulled = runner.invoke(
        app, ["adapter", "pull", f"{served.ref}@stable", str(target), "--json"], env=env
    )
    assert pulled.exit_code == 0, pulled.output
    assert json.loads(pulled.stdout) == {
        "folder": str(target),
        "ref": f"{served.ref}@stable",
        "revision": 1,
    }
    assert not (target / ADAPTER_WEIGHTS).is_symlink()
    original = (world.root / "served" / ADAPTER_WEIGHTS).read_bytes()
    assert (target / ADAPTER_WEIGHTS).read_bytes() == original
    missing = runner.invoke(app, ["adapter", "pull", "acme/missing", str(target)], env=env)
    assert missing.exit_code == 3
    assert _errors(missing)[0].startswith("error: adapter acme/missing does not exist — check")


def _files(root: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()
    }


def test_an_erased_adapter_is_refused_even_when_its_files_are_cached(
    world: ClientWorld, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    ref, cache = "acme/pull-erased", tmp_path / "cache"
    with world.client() as client:
        client.create_adapter(ref, world.fingerprint)
        client.publish_revision(ref, world.lora("pull-erased", seed=41))
        mint.pull(f"{ref}@1", client=client, cache_dir=cache)
        cached = _files(cache)
        erased_at = client.erase(ref).adapter.erased_at
        for at in ("@1", "@latest", ""):
            with pytest.raises(mint.FailedPrecondition, match=f"{ref} was erased at {erased_at}"):
                mint.pull(f"{ref}{at}", client=client, cache_dir=cache)
    assert _files(cache) == cached  # nothing written (or rewritten) for it

    monkeypatch.setenv("MINT_ADAPTER_CACHE", str(cache))
    target = tmp_path / "erased"
    env = {"MINT_REGISTRY": world.registry, "MINT_TOKEN": ALICE}
    refused = CliRunner().invoke(app, ["adapter", "pull", f"{ref}@1", str(target)], env=env)
    assert refused.exit_code == 1
    assert _errors(refused)[0].startswith(f"error: adapter {ref} was erased at {erased_at}")
    assert not target.exists()


def test_revisions_start_at_1(world: ClientWorld, served: Served, tmp_path: Path) -> None:
    with world.client() as client, pytest.raises(ValueError, match="revisions start at 1"):
        mint.pull(f"{served.ref}@0", client=client, cache_dir=tmp_path / "cache")
    env = {"MINT_REGISTRY": world.registry, "MINT_TOKEN": ALICE}
    target = tmp_path / "zero"
    zero = CliRunner().invoke(app, ["adapter", "pull", f"{served.ref}@0", str(target)], env=env)
    assert zero.exit_code == 2
    assert _errors(zero) == [f"error: '{served.ref}@0': revisions start at 1 (or name a channel)"]
    assert "Traceback" not in zero.stderr
    assert not target.exists() and not (tmp_path / "cache").exists()


def test_mint_adapter_pull_writes_only_where_nothing_else_would_be_overwritten(
    world: ClientWorld, served: Served, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MINT_ADAPTER_CACHE", str(tmp_path / "cache"))
    env = {"MINT_REGISTRY": world.registry, "MINT_TOKEN": ALICE}

    def pull_into(target: Path, *options: str) -> Result:
        return CliRunner().invoke(
            app, ["adapter", "pull", served.ref, str(target), *options], env=env
        )

    a_file = tmp_path / "notes.txt"
    a_file.write_text("mine")
    into_file = pull_into(a_file)
    assert into_file.exit_code == 2, into_file.output
    assert _errors(into_file) == [
        f"error: {a_file} is a file: give a folder to write the adapter's files into"
        " — see `mint adapter pull --help`"
    ]
    assert a_file.read_text() == "mine"

    busy = tmp_path / "busy"
    busy.mkdir()
    (busy / "README.md").write_text("mine")
    refused = pull_into(busy)
    assert refused.exit_code == 2, refused.output
    (refusal,) = _errors(refused)
    assert f"{busy} holds other files (README.md)" in refusal and "--force" in refusal
    assert sorted(p.name for p in busy.iterdir()) == ["README.md"]

    forced = pull_into(busy, "--force")
    assert forced.exit_code == 0, forced.output
    assert sorted(p.name for p in busy.iterdir()) == ["README.md", ADAPTER_CONFIG, ADAPTER_WEIGHTS]
    assert (busy / "README.md").read_text() == "mine"

    fresh = tmp_path / "fresh"
    assert pull_into(fresh).exit_code == 0
    again = pull_into(fresh)  # a previous pull's folder: its two files are replaced
    assert again.exit_code == 0, again.output
    assert sorted(p.name for p in fresh.iterdir()) == [ADAPTER_CONFIG, ADAPTER_WEIGHTS]
    assert "--force" in CliRunner().invoke(app, ["adapter", "pull", "--help"]).stdout
