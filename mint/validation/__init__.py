"""Checks on everything a user uploads, before any byte is stored or any event appended.

No pickle and no torch here: safetensors is parsed from bytes, configs with pydantic.
"""
