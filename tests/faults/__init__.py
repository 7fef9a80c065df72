"""Fault injection: hostile files, clients and upstreams against the real server."""
