"""A MinT process's /metrics as the tests read it."""

from __future__ import annotations

import urllib.request

from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample


def samples_of(text: str) -> list[Sample]:
    return [s for family in text_string_to_metric_families(text) for s in family.samples]


def scrape(url: str) -> list[Sample]:
    with urllib.request.urlopen(url, timeout=5) as response:
        return samples_of(response.read().decode())
