"""Test set-up: two forced CPU devices (so pmap paths run), before JAX is imported."""

import os

flags = os.environ.get("XLA_FLAGS", "")
if "xla_force_host_platform_device_count" not in flags:
    os.environ["XLA_FLAGS"] = f"{flags} --xla_force_host_platform_device_count=2".strip()
# No persistent XLA cache in tests or the CLIs they start (see mtmarl.runtime.enable_compilation_cache).
os.environ["MTMARL_XLA_CACHE"] = "off"


import jax  # noqa: E402  (after XLA_FLAGS is set)
import pytest  # noqa: E402


@pytest.fixture(autouse=True)
def _fast_compiles():
    """Compiles dominate on a 2-core CPU: skip XLA's heavy optimisation passes in tests.

    Each test compares programs compiled under the same setting, so what is
    checked (equalities against references) does not depend on it.
    """
    old = jax.config.read("jax_disable_most_optimizations")
    jax.config.update("jax_disable_most_optimizations", True)
    yield
    jax.config.update("jax_disable_most_optimizations", old)


@pytest.fixture
def _xla_optimisations_on():
    """Golden-value tests record with XLA's optimisations on, whatever the suite's compile settings."""
    old = jax.config.read("jax_disable_most_optimizations")
    jax.config.update("jax_disable_most_optimizations", False)
    yield
    jax.config.update("jax_disable_most_optimizations", old)


@pytest.fixture(autouse=True, scope="module")
def _release_compiled_programs():
    """Drop every compiled program when a test module ends.

    XLA:CPU maps each executable's code into memory; one process that compiles the whole
    suite's programs approached Linux's limit of 65,530 memory maps and crashed inside XLA
    (CI: a segfault in a compile about 60% of the way through). Modules rarely share programs.
    """
    yield
    import gc

    jax.clear_caches()
    gc.collect()
    if os.environ.get("MTMARL_TEST_MAPS"):
        with open("/proc/self/maps") as f:
            print(f"\n[maps after module: {sum(1 for _ in f)}]")
