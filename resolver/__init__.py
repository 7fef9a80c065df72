"""The query-handling core of aidns."""
