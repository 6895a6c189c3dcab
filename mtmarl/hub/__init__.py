"""Download and share vault archives (zips of ``<task>.vlt`` directories).

``python -m mtmarl.hub download <name-or-url> [--to vault_data] [--sha256 HEX]``
fetches a zip, checks it, and installs every ``<task>.vlt`` it holds as
``<to>/<env>/<task>.vlt``. ``python -m mtmarl.hub pack <vault dir> <zip>`` makes
such a zip (deterministic: same vault, same bytes) and prints its sha256.

Sources:

* ``http://``, ``https://`` or ``file://`` URL of a zip;
* ``hf://<owner>/<repo>[@<revision>]/<path-in-repo>``: a file of a Hugging Face
  *dataset* repository (the URL comes from ``huggingface_hub.hf_hub_url``, so
  ``HF_ENDPOINT`` is honoured; public repositories only);
* ``ogmarl:<source>/<env>/<scenario>``: og-marl's published datasets in the
  ``InstaDeepAI/og-marl`` dataset repository: source ``core`` (or ``og_marl``)
  is ``core/<env>/<scenario>.zip``, any other source ``s`` is
  ``prior_work/<s>/<env>/<scenario>.zip``. og-marl's RWARE data is
  ``ogmarl:alberdice/rware/{tiny,small}-{2,4,6}ag``; e.g.
  ``ogmarl:core/smac_v1/3m`` -> ``.../resolve/main/core/smac_v1/3m.zip``.

The env directory a vault goes to is ``--env``, else the env of an og-marl name,
else the ``task.env`` of the vault's ``mtmarl.json``, else the directory the
``.vlt`` sits in inside the zip.

Integrity: the zip's sha256 is checked when given (``--sha256`` or a
``--manifest`` JSON file mapping the source name or zip file name to a sha256).
Each download writes a file of its own in ``<to>/.downloads/`` (two downloads of
one archive at once never share one); an interrupted one is left as
``<name>.part`` and resumed with an HTTP Range request (``If-Range`` guards
against a changed file; a server answering 200 instead of 206 restarts it); a
full disk removes it. The zip is extracted to a temporary directory inside
``<to>``, each vault is checked (Flashbax metadata present, sha256 of the files
listed in ``mtmarl.json``) and only then renamed into place, so a failed or
corrupt download never replaces good data. Nothing the archive names (members,
env and vault names) may land outside ``<to>``. A vault already present and
valid is skipped (``--force`` replaces it).

Modules, one concern each: :mod:`.sources` (names, URLs, manifests),
:mod:`.transfer` (resumable download of one file), :mod:`.vaults` (checked,
staged install of a zip's vaults), :mod:`.fetch` (``download``: the steps in
order), :mod:`.packing` (``pack``) and :mod:`.cli` (the command line). This
package re-exports their public names.
"""

from mtmarl.hub.cli import main
from mtmarl.hub.fetch import DEFAULT_ROOT, check_writable, download, glob_escape
from mtmarl.hub.packing import pack
from mtmarl.hub.sources import OGMARL_REPO, Source, load_manifest, resolve_source
from mtmarl.hub.transfer import DownloadError, download_file
from mtmarl.hub.vaults import extract_vaults, is_valid_vault

__all__ = ["DEFAULT_ROOT", "OGMARL_REPO", "DownloadError", "Source", "check_writable", "download", "download_file",
           "extract_vaults", "glob_escape", "is_valid_vault", "load_manifest", "main", "pack", "resolve_source"]
