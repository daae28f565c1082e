"""The one error the datasets layer raises for bad input."""

from ..errors import InputError


class DatasetError(InputError, ValueError):
    """A dataset that cannot be used; the message starts with the file or field at fault."""
