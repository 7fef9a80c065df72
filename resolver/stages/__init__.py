"""The stages a query passes: access, attribution, process rules, blocking, caching, forwarding."""
