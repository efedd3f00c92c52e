"""Local Kafka and S3 servers for development and tests: `python -m deploy.local --help`."""
