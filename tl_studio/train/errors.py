"""How a training run ends other than by finishing."""


class Stopped(Exception):
    """The user asked to stop; raised at the top of a batch, caught once, in :meth:`Trainer.fit`."""


class NonFiniteLoss(RuntimeError):
    """The loss became NaN or infinite; the message names the step."""


class TrainingFailed(RuntimeError):
    """A run that cannot go on (wrong number of classes, out of memory at the smallest batch...)."""
