"""Test set-up: two forced CPU devices (so pmap paths run) and the suite's XLA flags, set before the JAX backend starts."""

import os

MIN_COMPILE_SECS = float(os.environ.get("MTMARL_TEST_MIN_COMPILE_SECS", "0.2"))

from helpers import SUITE_XLA_FLAGS  # noqa: E402  (imports jax; the flags are read when the backend starts)

flags = os.environ.get("XLA_FLAGS", "")
if "xla_force_host_platform_device_count" not in flags:
    flags = f"{flags} --xla_force_host_platform_device_count=2"
if "xla_cpu_use_fusion_emitters" not in flags:
    flags = f"{flags} {SUITE_XLA_FLAGS}"
os.environ["XLA_FLAGS"] = flags.strip()

import jax  # noqa: E402  (after XLA_FLAGS is set)
import pytest  # noqa: E402

from mtmarl import runtime  # noqa: E402

# One persistent XLA cache per pytest run, empty at the start (so the suite is measured
# cold) and shared by both workers, every module (compiled programs are dropped after each,
# see below) and every CLI a test starts: the same env and learner programs recur across
# test files. ``MTMARL_TEST_XLA_CACHE`` names it; the first process (the xdist controller,
# or pytest alone) creates it, the workers it starts inherit it, it is removed at the end.
_OWN_CACHE = "MTMARL_TEST_XLA_CACHE" not in os.environ
if _OWN_CACHE:
    import tempfile

    os.environ["MTMARL_TEST_XLA_CACHE"] = tempfile.mkdtemp(prefix="mtmarl-test-xla-")
os.environ["MTMARL_XLA_CACHE"] = os.environ["MTMARL_TEST_XLA_CACHE"]
# Every process of the suite stores what compiles in MIN_COMPILE_SECS or more: in-process training runs and the
# CLIs tests start call enable_compilation_cache() themselves, and would otherwise raise it to 1 s.
os.environ["MTMARL_XLA_CACHE_MIN_SECS"] = str(MIN_COMPILE_SECS)
runtime.enable_compilation_cache()


def pytest_unconfigure(config):
    if _OWN_CACHE:
        import shutil

        shutil.rmtree(os.environ["MTMARL_TEST_XLA_CACHE"], ignore_errors=True)


def pytest_collection_finish(session):
    """Every test module is imported now: the collector need never walk those objects again, and runs less
    often (mtmarl.runtime.tune_garbage_collector, which the CLIs the tests start call too)."""
    runtime.tune_garbage_collector()


@pytest.fixture(autouse=True, scope="session")
def _fast_compiles():
    """Compiles dominate on a 2-core CPU: skip XLA's heavy optimisation passes in tests.

    Each test compares programs compiled under the same setting, so what is
    checked (equalities against references) does not depend on it. Session-wide, so
    that module fixtures (trained runs, compiled systems), which pytest sets up before
    any function-scoped fixture, compile under it too.
    """
    old = jax.config.read("jax_disable_most_optimizations")
    jax.config.update("jax_disable_most_optimizations", True)
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


# The files with the most compile and run time (measured with `--durations=0` of the whole suite, two
# workers): with `--dist loadfile` each file goes to one worker in collection order, so a long file collected
# last leaves the other worker idle at the end. Longest first (the classic longest-processing-time order).
LONGEST_FIRST = ("test_evaluation.py", "test_smax.py", "test_hygen.py", "test_distributed.py", "test_finetune.py",
                 "test_training.py", "test_experiments.py", "test_algos.py", "test_run_safety.py", "test_online.py",
                 "test_tasks.py", "test_odis.py", "test_entity.py")


def pytest_collection_modifyitems(config, items):
    rank = {name: i for i, name in enumerate(LONGEST_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))  # stable: order within a file is kept
