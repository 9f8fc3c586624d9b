"""Exception hierarchy for domain errors.

Every class derives from :class:`ValueError`, so callers that only care about
"bad input" can catch that.
"""


class LoraTheoryError(ValueError):
    """Base class of the errors this package raises for invalid input."""


class ActivationError(LoraTheoryError):
    """An activation spec string is unknown or malformed."""


class ParameterError(LoraTheoryError):
    """A parameter lies outside its domain (for example mu outside [0, 1])."""


class GridError(LoraTheoryError):
    """A grid of values (for example a mu grid) is malformed."""


class TimeUnitError(LoraTheoryError):
    """A time unit was requested that does not apply to the activation."""


class SingularPointError(LoraTheoryError):
    """A quantity is undefined at the requested point (for example A(mu) = 0)."""


class QuadratureError(LoraTheoryError):
    """A numerical Gaussian expectation did not converge, or does not exist.

    The message names the expectation, the point (Q, R) or variance, the
    estimated error and the likely cause.
    """


class LoraTheoryWarning(Warning):
    """Base class of the warnings this package issues."""
