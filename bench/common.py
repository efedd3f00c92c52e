"""What the benchmarks share: servers to run against, and recording results."""

from __future__ import annotations

import json
import os
import platform
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from xml.sax.saxutils import escape

from kafka.errors import UnknownTopicOrPartitionError
from minio import Minio
from minio.deleteobjects import DeleteObject

from deploy.local.stack import ENDPOINT_VARIABLES, Stack
from mint.backends.kafka import KafkaConnection, admin

RESULTS = Path(__file__).resolve().parent / "results"


@contextmanager
def servers() -> Iterator[dict[str, str]]:
    """The MINT_* endpoints from the environment, or a temporary local stack."""
    keys = ENDPOINT_VARIABLES
    if all(k in os.environ for k in keys):
        yield {k: os.environ[k] for k in keys}
        return
    with tempfile.TemporaryDirectory(prefix="mint-bench-") as state:
        stack = Stack(Path(state))
        try:
            print(f"starting a temporary Kafka + S3 ({stack.up():.1f} s)", flush=True)
            yield stack.endpoints.as_env()
        finally:
            stack.down()


def record(name: str, result: dict[str, Any]) -> Path:
    """Write bench/results/<name>.json with the machine it ran on."""
    RESULTS.mkdir(exist_ok=True)
    result = {
        "benchmark": name,
        "when": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "platform": platform.platform(),
        },
        **result,
    }
    path = RESULTS / f"{name}.json"
    path.write_text(json.dumps(result, indent=2) + "\n")
    return path


def bar_chart_svg(
    name: str, title: str, bars: list[tuple[str, float]], unit: str, fmt: str = ",.0f"
) -> Path:
    """A horizontal bar chart as bench/results/<name>.svg (no plotting library needed)."""
    width, left, row, top = 640, 300, 34, 40
    longest = max(value for _, value in bars) or 1.0
    height = top + row * len(bars) + 10
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        'font-family="sans-serif" font-size="13">',
        f'<rect width="{width}" height="{height}" fill="white"/>',
        f'<text x="10" y="22" font-size="15" font-weight="bold">{title}</text>',
    ]
    for i, (label, value) in enumerate(bars):
        y = top + i * row
        length = (width - left - 90) * value / longest
        parts += [
            f'<text x="10" y="{y + 17}">{label}</text>',
            f'<rect x="{left}" y="{y + 4}" width="{length:.1f}" height="20" fill="#4a7bb7"/>',
            f'<text x="{left + length + 6:.1f}" y="{y + 18}">{value:{fmt}} {unit}</text>',
        ]
    parts.append("</svg>")
    path = RESULTS / f"{name}.svg"
    path.write_text("\n".join(parts) + "\n")
    return path


@dataclass(frozen=True)
class Panel:
    """One small bar chart of a figure: a bar per label (e.g. per size), in one unit."""

    title: str
    unit: str
    bars: list[tuple[str, float]]


def panels_svg(name: str, title: str, panels: list[Panel], columns: int = 2) -> Path:
    """Small bar charts, `columns` to a row, as bench/results/<name>.svg: for figures in
    different units side by side."""
    width, pad, row, label_w = 480, 10, 22, 60
    heights = [34 + row * len(p.bars) for p in panels]
    rows = [max(heights[i : i + columns]) for i in range(0, len(panels), columns)]
    total = 40 + sum(rows) + pad
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width * columns}" height="{total}" '
        'font-family="sans-serif" font-size="12">',
        f'<rect width="{width * columns}" height="{total}" fill="white"/>',
        f'<text x="{pad}" y="24" font-size="15" font-weight="bold">{escape(title)}</text>',
    ]
    for i, panel in enumerate(panels):
        x, y = (i % columns) * width + pad, 40 + sum(rows[: i // columns])
        parts.append(f'<text x="{x}" y="{y + 14}" font-weight="bold">{escape(panel.title)}</text>')
        longest = max(v for _, v in panel.bars) or 1.0
        for j, (label, value) in enumerate(panel.bars):
            top = y + 22 + j * row
            length = (width - label_w - 130) * value / longest
            parts += [
                f'<text x="{x}" y="{top + 14}">{escape(label)}</text>',
                f'<rect x="{x + label_w}" y="{top + 3}" width="{length:.1f}" height="16" '
                'fill="#4a7bb7"/>',
                f'<text x="{x + label_w + length + 6:.1f}" y="{top + 15}">'
                f"{value:,.4g} {escape(panel.unit)}</text>",
            ]
    parts.append("</svg>")
    path = RESULTS / f"{name}.svg"
    path.write_text("\n".join(parts) + "\n")
    return path


def remove(kafka: KafkaConnection, s3: Minio, topics: list[str], buckets: list[str]) -> None:
    """A run's topics and buckets, with what they hold."""
    client = admin(kafka)
    try:
        client.delete_topics(topics)
    except UnknownTopicOrPartitionError:
        pass
    finally:
        client.close()
    for bucket in buckets:
        if s3.bucket_exists(bucket):
            listed = s3.list_objects(bucket, recursive=True)
            for error in s3.remove_objects(bucket, (DeleteObject(o.object_name) for o in listed)):
                print(f"  could not remove {error.name}: {error.message}")
            s3.remove_bucket(bucket)
