"""Kafka stream processors (projections into S3, residency); they import `mint` only.

Empty until Step 3 adds the projector.
"""
