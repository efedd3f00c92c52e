"""The adapter catalog: pages of a tenant's adapters (the `AdapterCatalog` port)."""
