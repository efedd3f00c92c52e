"""gRPC services (registry, inference, router, residency controller); thin over `mint`.

Empty until Step 2 adds the registry: services import `mint`, never each other.
"""
