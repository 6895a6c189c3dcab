"""Per-task Flashbax vaults in og-marl's layout: writing, reading, validation, returns.

One package, one module per concern: ``layout`` (constants, paths, encodings), ``check``
(checksums, shapes), ``returns``, ``write``, ``read`` and ``cut`` (the first episodes of a vault, for bundling);
everything public is re-exported here.

Layout (og-marl compatible)::

    vault_data/<env>/<task>.vlt/<uid>/      one Flashbax Vault (zarr arrays in an OCDBT store)
    vault_data/<env>/<task>.vlt/mtmarl.json metadata of every uid in this .vlt (see below)

``<task>`` is the task's label from its task set (``6x6-3a``) or, for an
ad-hoc task, its parameters (``grid=5,agents=2,horizon=8``). One experience
dict per vault, with a batch axis of 1 and time axis ``T``::

    observations (1, T, N, O)   actions (1, T, N)   rewards (1, T, N)
    terminals (1, T, N)         truncations (1, T, N)
    infos: {legals (1, T, N, A), state (1, T, S) only when the env has a global state}

Rewards and episode flags are the team's, broadcast to every agent.

Storage is compact but lossless: the writer picks, per array, the smallest
encoding that reproduces the data exactly and records it in the Vault's own
``metadata.json`` (key ``mtmarl_encoding``), so a uid directory decodes on its
own. Observations/states are stored as ``uint8`` when their values are small
integers (``cast``), as ``uint8`` indices into a table of at most 256 distinct
values (``codebook``; standardised grid observations take few values), as
``float16`` when that is exact, else as ``float32``; actions as ``uint8``;
legals and episode flags as ``bool``. :func:`read_vault` always returns the
same dtypes whatever the storage: observations/rewards/terminals/truncations/
state ``float32`` (og-marl's convention), actions ``int32``, legals ``bool``.

``mtmarl.json`` holds, per uid: the task (ad-hoc string, name, env), agent
count, observation/state size, action count, env and package versions, the
collector's configuration (free-form), return statistics, and the sha256 of
every file of the uid directory (checked by :func:`read_vault`). og-marl's own
vaults have no ``mtmarl.json`` and are read as they are, with a
:class:`NoMetadataWarning` (nothing is verified against a checksum, and a
folder copied without its ``mtmarl.json`` should not pass unnoticed).
"""

from mtmarl.data.vault.check import (_file_hashes, check_experience, check_recorded, read_metadata, recorded_dims,
                                     recorded_task, sha256_file, verify_files)
from mtmarl.data.vault.layout import (DEFAULT_UID, ENCODING_KEY, FBX_META_FILE, FLAG_KEYS, FORMAT_VERSION, META_FILE,
                                      OUT_DTYPES, _decode, _encode_real, list_uids, resolve, task_dirname,
                                      vault_path)
from mtmarl.data.vault.read import NoMetadataWarning, describe_vault, export_npz, flat_arrays, read_vault
from mtmarl.data.vault.returns import episode_ends, episode_returns, return_stats, team_rewards
from mtmarl.data.vault.write import _fbx_write, package_versions, write_vault
from mtmarl.data.vault.cut import write_cut

__all__ = ["DEFAULT_UID", "ENCODING_KEY", "FBX_META_FILE", "FLAG_KEYS", "FORMAT_VERSION", "META_FILE", "OUT_DTYPES",
           "NoMetadataWarning", "check_experience", "check_recorded", "describe_vault", "episode_ends",
           "episode_returns", "export_npz", "flat_arrays", "list_uids", "package_versions", "read_metadata",
           "read_vault", "recorded_dims", "recorded_task", "resolve", "return_stats", "sha256_file",
           "task_dirname", "team_rewards", "vault_path",
           "verify_files", "write_cut", "write_vault", "_decode", "_encode_real", "_fbx_write", "_file_hashes"]
