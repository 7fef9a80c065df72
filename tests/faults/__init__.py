"""Fault injection: the real aidns under hostile clients, files and upstreams."""
