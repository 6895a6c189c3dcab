"""Process memory: give freed heap back to the OS (peak RSS of training runs)."""

from __future__ import annotations


def release_freed_memory() -> None:
    """Hand memory freed on the heap back to the OS (glibc ``malloc_trim``; a no-op elsewhere).

    Why: reading the vaults decodes every task to float32 and ``make_buffers``
    re-encodes it, and an XLA compile allocates and frees hundreds of MB; glibc
    keeps most of those freed temporaries mapped (about 300-400 MB after reading
    rware_15's vaults, 1.4 GB after compiling its evaluation in one program),
    and the rest of the run then adds to them.
    """
    import contextlib
    import ctypes
    import gc

    gc.collect()
    with contextlib.suppress(OSError, AttributeError):  # not glibc (macOS, musl): nothing to do
        ctypes.CDLL("libc.so.6").malloc_trim(0)
