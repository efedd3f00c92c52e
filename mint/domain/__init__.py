"""The domain core: adapters, revisions, channels, evaluations as a pure fold over events.

Nothing here imports Kafka, S3, gRPC or torch: commands are functions that check the
current state and return new events; `apply` folds one event into the state.
"""
