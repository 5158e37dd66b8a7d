"""One exception type for bad input: the CLI prints its message as one sentence and exits non-zero."""


class UserError(Exception):
    """Bad input from the user: the message says what is wrong and how to fix it."""
