"""Upstream servers: one exchange (UDP, TCP, TLS, HTTPS), kept connections, bootstrap, pool."""
