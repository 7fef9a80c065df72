"""Upstream servers: specs, one exchange over UDP, TCP, TLS or HTTPS, kept connections, the pool."""
