"""The one error type for mistakes a user can make and fix.

Every such mistake, in the library or on the command line, raises a `CharrnnError` (or one of
its kinds) whose message is one line that names the flag, file or value and says what to do.
The command line prints it as `charrnn: error: MESSAGE` and exits with code 2; the Python API
lets it propagate. Anything else is a bug in charrnn and keeps its traceback.
"""

from __future__ import annotations


class CharrnnError(ValueError):
    """Bad input the user can fix: the message says what, where, and what to do. (A
    ValueError, as Python's own bad values are; the CLI catches this type alone.)"""


class ConfigError(CharrnnError):
    """A setting has a value it cannot have; the message names the setting's flag."""
