"""The aidns command line."""
