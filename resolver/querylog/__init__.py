"""The query log: its schema and writer, and the reader behind log, who and top."""
