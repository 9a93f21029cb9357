"""The one error type users see: printed as a single line by the CLI, exit status 2."""


class BenchError(Exception):
    """Bad input or an impossible request; the message must say what is wrong and how to fix it."""
