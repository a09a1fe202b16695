"""The one exception type users see for bad input.

Every check on user input raises :class:`UserInputError` with one sentence that says what is
wrong and how to fix it. The CLI prints that sentence and exits with code 2, without a
traceback; Python callers can catch it like any ``ValueError``.
"""


class UserInputError(ValueError):
    """Bad input from the user: a path, a checkpoint, a data set, a model or an option.

    The message is one sentence that names the fix.
    """
