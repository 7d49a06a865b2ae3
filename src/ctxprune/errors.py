"""One exception type for problems the user can fix; the CLI prints it as one line and exits non-zero."""


class CtxpruneError(Exception):
    """A user-facing error whose message says what went wrong and what to do about it."""
