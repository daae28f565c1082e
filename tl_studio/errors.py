"""What every user-facing error has in common, so the CLI, the app and the jobs treat them alike.

An :class:`InputError` is something the person can fix: a bad file, a
setting out of range, weights that are not cached, a busy port. Its message
names the input and the fix, and is shown as one line with no traceback
(the CLI exits with status 2). Any other exception is a bug and keeps its
traceback. The engine's own error classes inherit from it as a mix-in, so
``except DatasetError`` and ``except ValueError`` keep working.
"""


class InputError(Exception):
    """A mistake in what was given, or a missing resource, that the user can fix; the message says how."""
