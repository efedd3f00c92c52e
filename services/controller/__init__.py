"""The residency controller: decides placement and publishes desired residency."""
