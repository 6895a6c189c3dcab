"""Download and share vault archives (zips of ``<task>.vlt`` directories).

``python -m mtmarl.hub download|pack``: the command line over :mod:`mtmarl.hub`.
Why a module of its own: argument parsing and turning a :class:`UserInputError` into
one ``error:`` line and exit status 2 belong to the command line, not to the library
functions training calls (``data.hub``).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from mtmarl.errors import UserInputError
from mtmarl.hub.fetch import DEFAULT_ROOT, download
from mtmarl.hub.packing import pack


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m mtmarl.hub", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    d = sub.add_parser("download", help="download and install a vault zip")
    d.add_argument("source", help="http(s)/file URL, hf://<owner>/<repo>/<path>.zip or "
                                  "ogmarl:<source>/<env>/<scenario>")
    d.add_argument("--to", default=str(Path("outputs") / "vault_data"),
                   help="vault root (default: %(default)s under the working directory; train with data.root=<it>)")
    d.add_argument("--write-bundled", action="store_true",
                   help=f"allow --to inside the bundled data {DEFAULT_ROOT} (tracked vaults)")
    d.add_argument("--sha256", default=None, help="expected sha256 of the zip")
    d.add_argument("--manifest", default=None, help="JSON file mapping names to sha256")
    d.add_argument("--env", default=None, help="env directory to install into (default: from the vault)")
    d.add_argument("--force", action="store_true", help="replace a vault that is already present")
    d.add_argument("--retries", type=int, default=3, help="resume attempts after a dropped connection")
    d.add_argument("--quiet", action="store_true", help="no progress bar")
    p = sub.add_parser("pack", help="zip a <task>.vlt directory and print its sha256")
    p.add_argument("vault", help="a <task>.vlt directory")
    p.add_argument("zip", help="output zip path")
    args = parser.parse_args(argv)
    try:
        if args.command == "pack":
            sha = pack(args.vault, args.zip)
            print(f"{sha}  {args.zip}")
            return 0
        if not args.write_bundled and Path(args.to).resolve().is_relative_to(DEFAULT_ROOT.resolve()):
            raise UserInputError(f"--to {args.to} is inside the bundled data {DEFAULT_ROOT} (tracked vaults); add "
                                 f"--write-bundled to install there, or leave --to at its default (outputs/vault_data)")
        results = download(args.source, args.to, sha256=args.sha256, manifest=args.manifest, env=args.env,
                           force=args.force, retries=max(0, args.retries),
                           progress=False if args.quiet else None)
    except UserInputError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    for path, status in results:
        print(f"{status}: {path}")
    return 0
