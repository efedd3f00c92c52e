"""The `mint` command's root: login, base models, evaluations, generation, and the
`adapter` group (mint/cli_app/adapter.py)."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer

import mint
from mint.client import GenerationChunk, Sampling, login

from . import adapter, audit, stack
from . import options as o
from .output import Server, connected, emit, emit_json, err, out, reporting_errors

app = typer.Typer(
    help="MinT from a terminal: register bases, publish and promote adapters, generate.\n\n"
    "Addresses and token come from `mint login` (or MINT_REGISTRY, MINT_ROUTER, MINT_TOKEN). "
    "Exit codes: 0 done, 1 refused, 2 bad usage, 3 not found, 4 not allowed, "
    "5 conflict, 6 unavailable (retry).",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    rich_markup_mode="markdown",
)
app.add_typer(adapter.app, name="adapter")
app.add_typer(audit.app, name="audit")
app.add_typer(stack.app, name="stack")
base_app = typer.Typer(
    help="Register base models.", no_args_is_help=True, rich_markup_mode="markdown"
)
eval_app = typer.Typer(
    help="Record evaluations of revisions.", no_args_is_help=True, rich_markup_mode="markdown"
)
app.add_typer(base_app, name="base")
app.add_typer(eval_app, name="eval")


def _version(show: bool) -> None:
    if show:
        typer.echo(f"mint {mint.__version__}")
        raise typer.Exit()


@app.callback()
def root(
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Print it.")
    ] = False,
) -> None:
    """MinT from a terminal."""


@app.command(
    name="login",
    epilog="Example: mint login --registry 127.0.0.1:50051 --router 127.0.0.1:50060",
)
def login_command(
    registry: Annotated[str, typer.Option(help="The registry's HOST:PORT (or several, a,b).")],
    router: Annotated[str, typer.Option(help="The router's HOST:PORT (for generate).")] = "",
    token: Annotated[
        str, typer.Option(prompt=True, hide_input=True, help="Your token (asked if left out).")
    ] = "",
    json: o.Json = False,
) -> None:
    """Store the addresses and your token in your config dir, readable by you alone.
    MINT_REGISTRY, MINT_ROUTER and MINT_TOKEN override them."""
    with reporting_errors():  # a malformed address is refused now, not at each command
        Server("registry", registry).check_address()
        if router:
            Server("router", router).check_address()
    path = login.save(login.Login(registry, router, token))
    emit(
        {"path": str(path), "registry": registry, "router": router},
        json,
        lambda: out.print(f"logged in to {registry}; stored in {path}"),
    )


@base_app.command(name="register", epilog="Example: mint base register ./my-base --name my-base")
def register_base(
    folder: Annotated[
        Path,
        typer.Argument(
            help="A Hugging Face model folder (config.json, *.safetensors).", exists=True
        ),
    ],
    name: Annotated[str | None, typer.Option(help="Its name (default: the folder's).")] = None,
    json: o.Json = False,
    request_id: o.RequestId = None,
) -> None:
    """Register a base model (admins only): its fingerprint and shapes are computed from
    the folder, as a node serving it computes them. Needs no torch."""
    with connected() as client:
        with err.status(f"hashing {folder} ...", spinner="dots"):
            described = mint.describe_base(folder, name)
        base = client.register_base(
            described.name, described.fingerprint, described.parameters, request_id=request_id
        )
    emit(base, json, lambda: out.print(f"{base.name}\t{base.fingerprint}"))


@eval_app.command(
    name="record",
    epilog="Example: mint eval record acme/tone 2 tone-suite --metric accuracy=0.93 --passed",
)
def record_evaluation(
    ref: o.Ref,
    revision: Annotated[int, typer.Argument(help="The revision evaluated.", min=1)],
    suite: Annotated[str, typer.Argument(help="The suite's name (what a gate requires).")],
    passed: Annotated[bool, typer.Option("--passed/--failed", help="The verdict.")],
    metric: Annotated[list[str] | None, typer.Option(help="NAME=NUMBER, repeatable.")] = None,
    dataset: Annotated[str, typer.Option(help="The eval dataset's fingerprint.")] = "",
    expected_version: o.ExpectedVersion = None,
    json: o.Json = False,
    request_id: o.RequestId = None,
) -> None:
    """Record an evaluation of a revision; a channel gated on the suite then takes it if
    it passed."""
    metrics = o.numbers(metric, "--metric")
    with connected() as client:
        result = client.record_evaluation(
            ref,
            revision,
            suite,
            metrics,
            passed,
            dataset_fingerprint=dataset,
            expected_version=expected_version,
            request_id=request_id,
        )
    verdict = "passed" if passed else "failed"
    emit(result, json, lambda: out.print(f"{ref} revision {revision} {verdict} {suite}"))


@app.command(epilog='Example: mint generate "Hello" --adapter acme/tone@stable')
def generate(
    prompt: Annotated[str, typer.Argument(help="The prompt.")],
    adapter: Annotated[
        list[str] | None,
        typer.Option(help="tenant/name[@channel|@revision]; repeat to stack (none: the base)."),
    ] = None,
    max_new_tokens: Annotated[int, typer.Option(help="At most this many tokens.")] = 32,
    temperature: Annotated[float, typer.Option(help="0: greedy.")] = 0.0,
    top_p: Annotated[float | None, typer.Option(help="Nucleus sampling, (0, 1].")] = None,
    seed: Annotated[
        int | None,
        typer.Option(help="The same seed gives the same sample (none: drawn, and shown)."),
    ] = None,
    json: o.Json = False,
) -> None:
    """Generate through the router, printing the tokens as they come (with --json: one
    document at the end, with what served it)."""
    sampling = Sampling(max_new_tokens, temperature, top_p, seed)
    chunks: list[GenerationChunk] = []
    with connected(router=True) as client:
        selectors = [mint.Selector.parse(a) for a in adapter or []]
        for chunk in client.generate_stream(prompt, selectors, sampling):
            chunks.append(chunk)
            if not json:
                typer.echo(chunk.text, nl=False)
    if json:
        emit_json(
            {
                "text": "".join(c.text for c in chunks),
                "tokens": [t for c in chunks for t in c.tokens],
                "adapters": chunks[0].adapters if chunks else [],
                "node": chunks[0].node if chunks else "",
                "provenance": next((c.provenance for c in chunks if c.provenance), None),
            }
        )
    else:
        typer.echo()
        made = next((c.provenance for c in chunks if c.provenance), None)
        if made is not None:  # on stderr: stdout is the text
            typer.echo(f"response {made.response_id} (seed {made.seed})", err=True)


def main() -> None:
    """The console script. click's own refusals (a missing argument, a folder that is not
    there) are one line too, pointing at the command's --help."""
    try:
        code = app(standalone_mode=False)
    except typer.Abort:
        err.print("aborted", markup=False)
        code = 1
    except Exception as exc:
        # click's exceptions (typer vendors click in some versions, so they are known by
        # what they carry, not by class): a usage error names the command's --help.
        if not hasattr(exc, "format_message") or not hasattr(exc, "exit_code"):
            raise
        ctx = getattr(exc, "ctx", None)
        if type(exc).__name__ == "NoArgsIsHelpError" and ctx is not None:
            typer.echo(ctx.get_help())
        else:
            help_hint = f" — see `{ctx.command_path} --help`" if ctx is not None else ""
            err.print(f"error: {exc.format_message().rstrip('.')}{help_hint}", markup=False)
        code = exc.exit_code
    sys.exit(code if isinstance(code, int) else 0)
