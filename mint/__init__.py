"""MinT: an event-sourced state platform for persistent per-user PEFT adapters.

Layout: `mint.v1` is generated from proto/ (never edited by hand); `mint.backends` holds
the infrastructure clients (Kafka, S3); `mint.models` the torch side (base models, LoRA).
"""

__version__ = "0.1.0"
