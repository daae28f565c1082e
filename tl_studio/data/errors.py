"""The one error the datasets layer raises for bad input."""


class DatasetError(ValueError):
    """A dataset that cannot be used; the message starts with the file or field at fault."""
