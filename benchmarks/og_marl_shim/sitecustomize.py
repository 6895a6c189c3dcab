"""Stand-ins for og-marl's logging imports where they are not installed.

og-marl's Oryx module imports its logger, whose module imports ``neptune`` (and
``neptune.utils.stringify_unsupported``) and a pandas helper
(``pandas.io.json._normalize._simple_json_normalize``). The learner timed by
``../shared/anchors/og_marl_oryx/bench_oryx.py`` never logs, so on a machine
without those packages (and no network to install them) these stand-ins let the
module import. They are used only for a name that cannot be imported for real:
the finder sits at the end of ``sys.meta_path``. ``benchmarks/vs_og_marl.py
--og-pythonpath benchmarks/og_marl_shim:...`` puts this folder on the og-marl
process's ``PYTHONPATH`` alone (Python imports ``sitecustomize`` at start-up).
"""

import importlib.abc
import importlib.machinery
import sys
import types


def _unavailable(*args, **kwargs):
    raise RuntimeError("og-marl's logging is not available here (benchmarks/og_marl_shim stand-in)")


STANDINS = {
    "neptune": {"init_run": _unavailable},
    "neptune.utils": {"stringify_unsupported": _unavailable},
    "pandas": {},
    "pandas.io": {},
    "pandas.io.json": {},
    "pandas.io.json._normalize": {"_simple_json_normalize": _unavailable},
}


class _StandIns(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    def find_spec(self, name, path=None, target=None):
        if name not in STANDINS:
            return None
        return importlib.machinery.ModuleSpec(name, self, is_package=any(k.startswith(name + ".") for k in STANDINS))

    def create_module(self, spec):
        module = types.ModuleType(spec.name)
        module.__dict__.update(STANDINS[spec.name])
        if spec.submodule_search_locations is not None:
            module.__path__ = []
        return module

    def exec_module(self, module):
        """Nothing to run: the attributes were set in create_module."""


sys.meta_path.append(_StandIns())
