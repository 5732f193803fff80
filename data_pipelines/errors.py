"""The error a reader raises for bad input data: the message names the file (and line)."""


class DataError(ValueError):
    """Missing, empty, undecodable or malformed input data; the message names the file and,
    where there is one, the line (`path:line: what is wrong`). The CLIs report it without a
    traceback and exit with status 2 (tlx.errors)."""
