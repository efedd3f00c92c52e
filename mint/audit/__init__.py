"""Audits from the log alone: verify the hash chains and blobs, replay the state as of a
moment, explain an adapter's provenance. `python -m mint.audit --help`."""
