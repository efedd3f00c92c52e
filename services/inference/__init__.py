"""The inference node: serves `Inference` from adapters resident in its slots, and loads
or evicts them as the desired-residency topic says."""
