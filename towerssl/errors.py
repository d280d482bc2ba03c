"""Errors a user must fix: the CLI prints them as one line, without a traceback."""


class UsageError(Exception):
    """Bad input, option or missing data; the message names the file, table, row or field."""
