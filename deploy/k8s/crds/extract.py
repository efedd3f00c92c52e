"""Vendor the schemas of the custom resources the manifests use (run by hand).

  python deploy/k8s/crds/extract.py CRD.yaml --source "owner/repo@tag:path (commit)"

Writes `<group>_<kind>_<version>.json` beside this file for each served version of the
CRD: its openAPIV3Schema without the `description` texts (they make up most of the
bytes), and where it came from. tests/deploy validate custom resources against them.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import yaml

HERE = Path(__file__).resolve().parent


def without_descriptions(schema: Any) -> Any:
    """The schema minus its `description` keywords (a property that happens to be
    called "description" stays: names under `properties` are not keywords)."""
    if isinstance(schema, list):
        return [without_descriptions(item) for item in schema]
    if not isinstance(schema, dict):
        return schema
    kept = {}
    for key, value in schema.items():
        if key == "properties" and isinstance(value, dict):
            kept[key] = {name: without_descriptions(s) for name, s in value.items()}
        elif key != "description" or not isinstance(value, str):
            kept[key] = without_descriptions(value)
    return kept


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("crd", type=Path)
    parser.add_argument("--source", required=True, help="where the CRD file came from")
    args = parser.parse_args()
    crd = yaml.safe_load(args.crd.read_text())
    group, kind = crd["spec"]["group"], crd["spec"]["names"]["kind"]
    for version in crd["spec"]["versions"]:
        if not version.get("served"):
            continue
        out = HERE / f"{group}_{kind}_{version['name']}.json"
        doc = {
            "source": args.source,
            "apiVersion": f"{group}/{version['name']}",
            "kind": kind,
            "schema": without_descriptions(version["schema"]["openAPIV3Schema"]),
        }
        out.write_text(json.dumps(doc, indent=1, sort_keys=True) + "\n")
        print(f"wrote {out.name}")


if __name__ == "__main__":
    main()
