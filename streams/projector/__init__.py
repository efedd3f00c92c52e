"""The S3 projection of the adapter log: `python -m streams.projector --help`.

planner.py decides what objects an event implies (pure); sink.py writes them to S3
idempotently; runner.py is the Kafka consumer loop (live) and the rebuild from offset 0.
"""
