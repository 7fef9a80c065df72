"""Which program sent a query: the lookup contract, Linux and macOS, and the known AI tools."""
