"""The keeper: heavy work (compiling lists) in a child process, so serving never waits on it."""
