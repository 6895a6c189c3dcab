"""Errors caused by what the user asked for (bad names, keys, shapes).

Command-line entry points print these as one line instead of a traceback.
"""


class UserInputError(ValueError):
    """A task, config or data request that cannot be satisfied as given."""
