"""Exceptions for mistakes a user can make (bad files, bad arguments).

The CLI prints these as one readable line, without a traceback; anything
else is a bug and keeps its traceback.
"""


class HeimdallError(Exception):
    """A user-facing error: the message names the file, field or value at fault."""
