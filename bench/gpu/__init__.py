"""Checks run on the device machine (a GPU), prepared and smoke-tested on the CPU."""
