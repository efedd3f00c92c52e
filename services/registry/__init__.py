"""The registry gRPC service: `python -m services.registry --help`."""
