"""Errors caused by what the user asked for (bad names, keys, shapes).

Command-line entry points print these as one line instead of a traceback.
"""


class UserInputError(ValueError):
    """A task, config or data request that cannot be satisfied as given."""


class NonFiniteMetricError(UserInputError):
    """Training produced NaN or inf; the run stopped without saving the bad state.

    A :class:`UserInputError` so the command line prints it as one line and exits
    non-zero: the fix is a setting (learning rate, value support, data), not code.
    """
