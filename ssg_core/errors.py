"""The one exception type for user mistakes.

Library code raises `SSGError` with a message a user can act on; every command-line
entry point catches it (see `ssg_core.cli.main_guard`) and prints a single line, so a
bad flag or a missing file never ends in a stack trace from deep inside torch.
"""


class SSGError(ValueError):
    """A user-facing error: bad input, a missing or mismatched checkpoint, an impossible setting."""
