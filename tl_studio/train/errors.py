"""How a training run ends other than by finishing."""

from ..errors import InputError


class Stopped(Exception):
    """The user asked to stop; raised at the top of a batch, caught once, in :meth:`Trainer.fit`."""


class NonFiniteLoss(InputError, RuntimeError):
    """The loss became NaN or infinite; the message names the step (and suggests a lower learning rate)."""


class TrainingFailed(InputError, RuntimeError):
    """A run that cannot go on (wrong number of classes, out of memory at the smallest batch...)."""
