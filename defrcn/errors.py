"""Errors the command-line tools turn into one line on stderr.

`InputError` is for bad input (a missing file, a corrupt json, an unknown key): the
tools print its message and exit with code 2. Anything else is a runtime failure
(exit code 1).
"""


class InputError(Exception):
    """Bad user input. The message names the file or key and the problem."""

    def __init__(self, message, *, path=None):
        if path is not None:
            message = f"{path}: {message}"
        super().__init__(message)
        self.path = path
