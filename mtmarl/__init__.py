"""mtmarl: compiled multi-task offline multi-agent RL in JAX.

On CPU, XLA exposes one device however many cores there are, and one jitted
program does not keep both cores of a small machine busy; ``pmap`` over forced
host devices does. So, unless
the user already chose (``XLA_FLAGS`` with a device count, or
``MTMARL_HOST_DEVICES``), importing mtmarl before JAX asks for one host device
per core, at most 8. This has no effect on GPU/TPU runs.
"""

import os as _os
import sys as _sys

__version__ = "0.1.0"


def _default_host_devices() -> None:
    count = _os.environ.get("MTMARL_HOST_DEVICES")
    if count and not (count.isascii() and count.isdigit() and int(count) >= 1):
        # XLA would print its whole flag list and abort: one line instead (no UserInputError handler runs yet)
        _sys.stderr.write(f"error: MTMARL_HOST_DEVICES={count!r} is not allowed: want an integer >= 1\n")
        raise SystemExit(2)
    flags = _os.environ.get("XLA_FLAGS", "")
    if "jax" in _sys.modules or "xla_force_host_platform_device_count" in flags:
        return
    count = count or str(min(_os.cpu_count() or 1, 8))
    _os.environ["XLA_FLAGS"] = f"{flags} --xla_force_host_platform_device_count={count}".strip()


_default_host_devices()
