"""Errors caused by what the user asked for (bad names, keys, shapes).

Command-line entry points print these as one line instead of a traceback.
"""

import errno
import os


class UserInputError(ValueError):
    """A task, config or data request that cannot be satisfied as given."""


class NonFiniteMetricError(UserInputError):
    """Training produced NaN or inf; the run stopped without saving the bad state.

    A :class:`UserInputError` so the command line prints it as one line and exits
    non-zero: the fix is a setting (learning rate, value support, data), not code.
    """


# What the file system says when a path cannot hold a run: full, read-only, not permitted, a name too long,
# a file where a directory should be. The fix is another place or more space, not code: one line, no traceback.
FILE_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EROFS, errno.EACCES, errno.EPERM,
                         errno.ENAMETOOLONG, errno.EEXIST, errno.ENOTDIR, errno.EISDIR})


def file_error(err: BaseException) -> UserInputError | None:
    """A :class:`UserInputError` naming the path and the reason for an ``OSError`` of :data:`FILE_ERRNOS`, else None."""
    if not isinstance(err, OSError) or err.errno not in FILE_ERRNOS:
        return None
    where = f" ({err.filename})" if err.filename else ""
    return UserInputError(f"cannot write{where}: {err.strerror or os.strerror(err.errno)}")


# pyproject.toml's optional extras: for each, the (module, distribution) pairs its features import.
EXTRAS = {
    "neptune": (("neptune", "neptune"),),
    "slurm": (("hydra_plugins.hydra_submitit_launcher", "hydra-submitit-launcher"), ("submitit", "submitit")),
}


def require_extra(extra: str, feature: str, otherwise: str = "") -> None:
    """Raise a one-line :class:`UserInputError` when ``feature`` (what the user asked for, e.g. ``logger.neptune=true``)
    needs a package of the optional ``extra`` that is not importable; ``otherwise`` names a way to do without it."""
    import importlib

    for module, dist in EXTRAS[extra]:
        try:
            importlib.import_module(module)
        except ImportError:
            alternative = f" (or {otherwise})" if otherwise else ""
            raise UserInputError(f"{feature} needs the package {dist}, which is not installed: "
                                 f"pip install 'mtmarl[{extra}]'{alternative}") from None
