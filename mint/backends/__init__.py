"""Infrastructure back ends (Kafka, S3). The domain core never imports this package."""
