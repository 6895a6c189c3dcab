"""The Hydra configs of every entry point, shipped inside the package.

They live here (not in a top-level ``configs/``) so that a plain, non-editable
``pip install`` carries them: ``pyproject.toml`` lists ``**/*.yaml`` as package
data of ``mtmarl.configs``, and everything finds them through ``CONFIG_DIR``,
the directory of this file, wherever the package was installed.

Why a directory path rather than Hydra's ``pkg://mtmarl.configs``: setuptools
installs package data as ordinary files (wheels are unpacked, never imported
from a zip), so the path always exists; and the same path serves the readers
that load YAML without Hydra (task sets, algorithm defaults, network presets,
the key checks of :mod:`mtmarl.config_check`). One mechanism for all of them
keeps Hydra and those readers from ever disagreeing about which files count.
User search paths (``hydra.searchpath=[file://...]``) are added after this
primary directory as usual. Hydra skips this ``__init__.py`` and ``__pycache__``
when it lists config groups.
"""

from pathlib import Path

CONFIG_DIR = Path(__file__).resolve().parent
