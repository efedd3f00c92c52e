"""An adapter's lineage (`provenance.lineage`) as a graph other tools draw: Graphviz DOT
(`dot -Tsvg`) and Mermaid (GitHub and most Markdown viewers render it in a ```mermaid
block). A node per revision with who published it, its evaluations and the channels that
pointed at it; an edge from each parent."""

from __future__ import annotations

from typing import Any


def _revisions(doc: dict[str, Any]) -> list[dict[str, Any]]:
    return sorted(doc["revisions"].values(), key=lambda r: r["number"])


def _label_lines(revision: dict[str, Any]) -> list[str]:
    verdicts = [
        f"{e['suite']} {'passed' if e['passed'] else 'failed'}" for e in revision["evaluations"]
    ]
    channels = sorted({c["channel"] for c in revision["channels"]})
    lines = [
        f"revision {revision['number']}",
        f"by {revision['published_by']}",
        f"run {revision['provenance']['training_run_id'] or '-'}",
        ", ".join(verdicts) or "not evaluated",
    ]
    return lines + ([f"channels: {', '.join(channels)}"] if channels else [])


def _dot_text(text: str) -> str:
    return text.replace("\\", "\\\\").replace('"', '\\"')


def to_dot(doc: dict[str, Any]) -> str:
    lines = [
        f'digraph "{_dot_text(doc["adapter"])}" {{',
        "  rankdir=LR;",
        '  node [shape=box, style="rounded,filled", fillcolor="#eef2f8", fontname="sans-serif"];',
    ]
    for r in _revisions(doc):
        label = "\\n".join(_dot_text(line) for line in _label_lines(r))
        passed = any(e["passed"] for e in r["evaluations"])
        color = ', fillcolor="#e8f4e8"' if passed else ""
        lines.append(f'  r{r["number"]} [label="{label}"{color}];')
    for r in _revisions(doc):
        lines += [f"  r{p} -> r{r['number']};" for p in r["parents"] if p in doc["revisions"]]
    return "\n".join([*lines, "}"]) + "\n"


def _mermaid_text(text: str) -> str:
    # Mermaid's quoted labels take HTML entities, not backslash escapes.
    return text.replace("&", "&amp;").replace('"', "&quot;").replace("<", "&lt;")


def to_mermaid(doc: dict[str, Any]) -> str:
    lines = ["flowchart LR", f"  %% {_mermaid_text(doc['adapter'])} lineage"]
    for r in _revisions(doc):
        label = "<br/>".join(_mermaid_text(line) for line in _label_lines(r))
        lines.append(f'  r{r["number"]}["{label}"]')
    for r in _revisions(doc):
        lines += [f"  r{p} --> r{r['number']}" for p in r["parents"] if p in doc["revisions"]]
    return "\n".join(lines) + "\n"
