"""Exceptions for mistakes a user can make (bad files, bad arguments).

The CLI prints these as one readable line, without a traceback; anything
else is a bug and keeps its traceback.
"""

from pydantic import ValidationError


class HeimdallError(Exception):
    """A user-facing error: the message names the file, field or value at fault."""


def describe_validation_error(exc: ValidationError) -> str:
    """One line naming each invalid field of a pydantic error: ``a.b: message; c: message``."""
    return "; ".join(
        f"{'.'.join(str(p) for p in err['loc']) or '<top>'}: {err['msg']}" for err in exc.errors()
    )
