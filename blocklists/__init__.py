"""Shipped blocklists, read with importlib.resources."""
