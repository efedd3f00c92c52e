"""`mint adapter ...`: an adapter's life, from creation to archive."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Annotated

import typer
from rich.progress import BarColumn, DownloadColumn, Progress, TransferSpeedColumn
from rich.table import Table

from mint.client import Adapter, CommandResult, Event, pull
from mint.client.build import check_peft_folder
from mint.layout import ADAPTER_CONFIG, ADAPTER_WEIGHTS

from . import options as o
from .output import connected, emit, err, fail, out

app = typer.Typer(
    help="Create, publish, promote and inspect adapters.",
    no_args_is_help=True,
    rich_markup_mode="markdown",
)

Ref = o.Ref
Reason = Annotated[str, typer.Option(help="Why, kept in the adapter's history.")]


def _changed(result: CommandResult, what: str, as_json: bool) -> None:
    def render() -> None:
        again = " (already applied: this is a re-send)" if result.duplicate else ""
        out.print(f"{what}{again}; {result.adapter.ref} is at version {result.last_version}")

    emit(result, as_json, render)


@app.command(epilog="Example: mint adapter create acme/tone --base 3f2a... --label kind=tone")
def create(
    ref: Ref,
    base: Annotated[
        str, typer.Option(help="The base model's fingerprint (`mint base register` prints it).")
    ],
    label: o.Pairs = None,
    json: o.Json = False,
    request_id: o.RequestId = None,
) -> None:
    """Create an adapter of a registered base model. Its name is never reused."""
    labels = o.pairs(label, "--label")
    with connected() as client:
        result = client.create_adapter(ref, base, labels=labels, request_id=request_id)
    _changed(result, f"created {ref}", json)


@app.command(epilog="Example: mint adapter publish acme/tone ./my-lora --parent 1")
def publish(
    ref: Ref,
    folder: Annotated[
        Path, typer.Argument(help="A PEFT save_pretrained folder.", exists=True, file_okay=False)
    ],
    parent: Annotated[
        list[int] | None, typer.Option(help="A revision it was trained from.", min=1)
    ] = None,
    training_run: Annotated[str, typer.Option(help="The training run's id.")] = "",
    dataset: Annotated[list[str] | None, typer.Option(help="A dataset's fingerprint.")] = None,
    hyperparameter: o.Pairs = None,
    tool_version: o.Pairs = None,
    expected_version: o.ExpectedVersion = None,
    json: o.Json = False,
    request_id: o.RequestId = None,
) -> None:
    """Upload a new revision (a progress bar follows the weights going out); `latest`
    moves to it."""
    _check_peft_folder(folder)
    with connected() as client, UploadBar(quiet=json) as follow:
        result = client.publish_revision(
            ref,
            folder,
            parents=parent or (),
            training_run_id=training_run,
            dataset_fingerprints=dataset or (),
            hyperparameters=o.pairs(hyperparameter, "--hyperparameter"),
            tool_versions=o.pairs(tool_version, "--tool-version"),
            expected_version=expected_version,
            progress=follow,
            request_id=request_id,
        )
    number = result.adapter.revisions[-1].number
    _changed(result, f"published {ref} revision {number}", json)


def _check_peft_folder(folder: Path) -> None:
    """Before any upload starts (its progress bar): the folder's files."""
    try:
        check_peft_folder(folder)
    except ValueError as exc:
        raise fail(f"error: {exc} — see `mint adapter publish --help`", 2) from None


class UploadBar:
    """A rich progress bar on stderr fed by the client's `progress(sent, total)`."""

    def __init__(self, quiet: bool) -> None:
        self.bar = Progress(
            *Progress.get_default_columns()[:-1],
            BarColumn(),
            DownloadColumn(),
            TransferSpeedColumn(),
            console=err,
            disable=quiet,
            transient=False,
        )
        self.task = self.bar.add_task("uploading", total=None)

    def __enter__(self) -> UploadBar:
        self.bar.start()
        return self

    def __exit__(self, *_: object) -> None:
        self.bar.stop()

    def __call__(self, sent: int, total: int) -> None:
        self.bar.update(self.task, completed=sent, total=total)


@app.command(epilog="Example: mint adapter promote acme/tone stable 2 --reason 'evals passed'")
def promote(
    ref: Ref,
    channel: Annotated[str, typer.Argument(help="The channel, e.g. stable.")],
    revision: Annotated[int, typer.Argument(help="The revision it should point at.", min=1)],
    reason: Reason = "",
    expected_version: o.ExpectedVersion = None,
    json: o.Json = False,
    request_id: o.RequestId = None,
) -> None:
    """Point a channel at a revision (forward or back). A gated channel takes only a
    revision that passed its suite."""
    with connected() as client:
        result = client.promote(
            ref,
            channel,
            revision,
            reason=reason,
            expected_version=expected_version,
            request_id=request_id,
        )
    _changed(result, f"{channel} -> revision {revision}", json)


@app.command(epilog="Example: mint adapter rollback acme/tone stable")
def rollback(
    ref: Ref,
    channel: Annotated[str, typer.Argument(help="The channel to move back.")],
    to: Annotated[
        int | None,
        typer.Option(help="The revision (default: where it pointed before its last move).", min=1),
    ] = None,
    reason: Reason = "rollback",
    json: o.Json = False,
    request_id: o.RequestId = None,
) -> None:
    """Move a channel back, by default to where it pointed before its last move (refused if
    the adapter changed meanwhile)."""
    with connected() as client:
        result = client.rollback(ref, channel, to, reason=reason, request_id=request_id)
    _changed(result, f"{channel} -> revision {result.adapter.channels[channel]}", json)


@app.command(epilog="Example: mint adapter archive acme/tone --reason 'replaced by acme/tone2'")
def archive(
    ref: Ref,
    reason: Reason = "",
    expected_version: o.ExpectedVersion = None,
    json: o.Json = False,
    request_id: o.RequestId = None,
) -> None:
    """Archive an adapter: no more revisions or moves; its history stays readable."""
    with connected() as client:
        result = client.archive(
            ref, reason=reason, expected_version=expected_version, request_id=request_id
        )
    _changed(result, f"archived {ref}", json)


@app.command(epilog="Example: mint adapter erase acme/tone --yes")
def erase(
    ref: Ref,
    yes: Annotated[
        bool, typer.Option("--yes", help="erase without asking (it cannot be undone)")
    ] = False,
    expected_version: o.ExpectedVersion = None,
    json: o.Json = False,
    request_id: o.RequestId = None,
) -> None:
    """Erase an adapter for good: its weights can never be read again anywhere; the log
    keeps who erased it and when."""
    if not yes and not typer.confirm(f"erase {ref} for good? This cannot be undone"):
        raise typer.Exit(1)
    with connected() as client:
        result = client.erase(ref, expected_version=expected_version, request_id=request_id)
    _changed(result, f"erased {ref} at {result.adapter.erased_at}", json)


@app.command(epilog="Example: mint adapter show acme/tone --json")
def show(ref: Ref, json: o.Json = False) -> None:
    """An adapter: its base, channels, gates and revisions."""
    with connected() as client:
        adapter = client.get_adapter(ref)
    emit(adapter, json, lambda: _render_adapter(adapter))


def _render_adapter(adapter: Adapter) -> None:
    state = f"  (erased at {adapter.erased_at})" if adapter.erased else ""
    out.print(f"{adapter.ref}{state or ('  (archived)' if adapter.archived else '')}")
    out.print(f"  id       {adapter.adapter_id}")
    out.print(f"  base     {adapter.base_fingerprint}")
    out.print(f"  version  {adapter.version}")
    for title, values in (
        ("labels", adapter.labels),
        ("channels", adapter.channels),
        ("gates", adapter.gates),
    ):
        if values:
            out.print(f"  {title:<8} " + ", ".join(f"{k}={v}" for k, v in sorted(values.items())))
    table = Table("revision", "sha256", "bytes", "parents", "evaluations", box=None)
    for r in adapter.revisions:
        evaluations = ", ".join(
            f"{e.suite}:{'pass' if e.passed else 'fail'}" for e in r.evaluations
        )
        parents = ",".join(map(str, r.parents))
        table.add_row(
            str(r.number), r.weights_sha256[:12], str(r.weights_size), parents, evaluations
        )
    if adapter.revisions:
        out.print(table)


@app.command(epilog="Example: mint adapter history acme/tone")
def history(ref: Ref, json: o.Json = False) -> None:
    """Every event of an adapter, oldest first: who did what, when, with which request id."""
    with connected() as client:
        events = client.history(ref)
    emit(events, json, lambda: _render_history(events))


def _render_history(events: list[Event]) -> None:
    table = Table("version", "time", "event", "actor", "request id", "details", box=None)
    for e in events:
        name = e.event_type.rpartition(".")[2]
        details = "" if e.payload is None else _details(e.payload)
        when = e.occurred_at.strftime("%Y-%m-%d %H:%M:%S")
        table.add_row(str(e.stream_version), when, name, e.actor, e.request_id, details)
    out.print(table)


def _details(payload: object) -> str:
    fields = getattr(payload, "__dataclass_fields__", {})
    shown = ("revision", "channel", "previous_revision", "reason", "suite", "passed")
    return " ".join(f"{k}={getattr(payload, k)}" for k in shown if k in fields)


@app.command(name="ls", epilog="Example: mint adapter ls acme --label kind=tone")
def list_adapters(
    tenant: Annotated[str, typer.Argument(help="The tenant, e.g. acme.")],
    label: o.Pairs = None,
    page_size: Annotated[int, typer.Option(help="Adapters per request.")] = 100,
    json: o.Json = False,
) -> None:
    """A tenant's adapters (those carrying every --label), in name order, every page."""
    labels = o.pairs(label, "--label")
    with connected() as client:
        found = list(client.list_adapters(tenant, labels=labels, page_size=page_size))

    def render() -> None:
        for summary in found:
            shown = ",".join(f"{k}={v}" for k, v in sorted(summary.labels.items()))
            typer.echo(f"{summary.ref}\t{summary.base_fingerprint[:12]}\t{shown}".rstrip())

    emit(found, json, render)


@app.command(
    name="pull",
    epilog="Example: mint adapter pull acme/tone@stable ./tone (or acme/tone@2, or acme/tone)",
)
def pull_command(
    ref: Annotated[
        str,
        typer.Argument(
            help="tenant/name@CHANNEL, tenant/name@REVISION (a number, from 1) or tenant/name "
            "(its latest)."
        ),
    ],
    folder: Annotated[
        Path,
        typer.Argument(
            help="Where to write the PEFT folder: a new or empty folder, or one a pull wrote."
        ),
    ],
    force: Annotated[
        bool,
        typer.Option(
            "--force",
            help=f"Write {ADAPTER_CONFIG} and {ADAPTER_WEIGHTS} into a folder that holds other "
            "files too (those two are replaced).",
        ),
    ] = False,
    json: o.Json = False,
) -> None:
    """Download a revision (sha256-checked, through the local cache) as a PEFT folder that
    `PeftModel.from_pretrained` loads. Refused for an erased adapter, cached or not."""
    _check_destination(folder, force)
    with connected() as client, err.status(f"pulling {ref} ...", spinner="dots"):
        cached = pull(ref, client=client)
    _write_files(cached, folder)
    emit(
        {"ref": ref, "folder": str(folder), "revision": int(cached.name)},
        json,
        lambda: out.print(f"pulled {ref} (revision {cached.name}) into {folder}"),
    )


def _check_destination(folder: Path, force: bool) -> None:
    """Before downloading: a pull writes two files, never over a file, nor beside someone
    else's files unless told to."""
    a_file = next((p for p in (folder, *folder.parents) if p.exists() and not p.is_dir()), None)
    if a_file is not None:
        raise fail(
            f"error: {a_file} is a file: give a folder to write the adapter's files into"
            " — see `mint adapter pull --help`",
            2,
        )
    try:
        there = {p.name for p in folder.iterdir()} if folder.is_dir() else set()
    except OSError as exc:
        raise fail(f"error: cannot read {folder}: {exc.strerror or exc}", 2) from None
    others = sorted(there - {ADAPTER_CONFIG, ADAPTER_WEIGHTS})  # a previous pull's are fine
    if others and not force:
        shown = ", ".join(others[:3]) + (f" and {len(others) - 3} more" if len(others) > 3 else "")
        raise fail(
            f"error: {folder} holds other files ({shown}): pull into a new or empty folder, "
            "or pass --force to write the adapter's two files beside them",
            2,
        )


def _write_files(cached: Path, folder: Path) -> None:
    """The blobs' bytes, not the cache's links; an old file (or link) replaced, not
    written through."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
        for file in sorted(cached.iterdir()):
            (folder / file.name).unlink(missing_ok=True)
            shutil.copyfile(file, folder / file.name)
    except OSError as exc:
        raise fail(f"error: cannot write into {folder}: {exc.strerror or exc}", 2) from None
