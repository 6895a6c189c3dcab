"""``python -m mtmarl.data card <task set> [--markdown] [--out DIR]``: the data card of a task set (references,
collection cost and vaults per task, datasets by quality; with ``--out``, as Markdown with two figures);
``python -m mtmarl.data stats <vault | task set> [--hist out.png] [--validate]``: per-vault statistics from the arrays;
``python -m mtmarl.data export <vault> <out.npz> [--uid UID] [--force]``: one vault as a numpy ``.npz`` (outside
the vault; an existing file replaced only with ``--force``)."""

from __future__ import annotations

import argparse
import json
import sys

from mtmarl.errors import UserInputError


def main(argv: list[str] | None = None) -> int:
    from mtmarl.data import stats

    parser = argparse.ArgumentParser(prog="python -m mtmarl.data", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("stats", help="transitions, episodes and return distribution per vault")
    p.add_argument("target", help="a .vlt (or .vlt/<uid>) directory, a task set name, or an ad-hoc task")
    p.add_argument("--root", default=str(stats.DEFAULT_ROOT),
                   help="vault root for task sets (default: %(default)s)")
    p.add_argument("--hist", default=None, help="save a histogram of episode returns to this PNG")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.add_argument("--no-verify", dest="verify", action="store_false",
                   help="skip the sha256 check of files listed in mtmarl.json")
    p.add_argument("--validate", action="store_true",
                   help="check the arrays against the task's env, not only against the sizes mtmarl.json "
                        "records (a vault path: the task mtmarl.json names; builds each env; slow for RWARE)")
    c = sub.add_parser("card", help="the data card: per task the reference, collection cost and vault; "
                                    "datasets by quality; figures with --out")
    c.add_argument("target", help="a task set name or an ad-hoc task")
    c.add_argument("--root", default=str(stats.DEFAULT_ROOT), help="vault root (default: %(default)s)")
    c.add_argument("--references", default=None, help="references file (default: <root>/references.json)")
    c.add_argument("--markdown", action="store_true", help="print the card as Markdown")
    c.add_argument("--out", default=None,
                   help="write <out>/<set>.md, <set>_returns.png and <set>_curves.png instead of printing")
    c.add_argument("--no-verify", dest="verify", action="store_false",
                   help="skip the sha256 check of the vaults the returns figure reads")
    e = sub.add_parser("export", help="write one vault as a numpy .npz (og-marl keys, infos/legals, ...)")
    e.add_argument("vault", help="a .vlt (or .vlt/<uid>) directory")
    e.add_argument("out", help="output .npz file")
    e.add_argument("--uid", default=None, help="dataset uid inside the .vlt (default: the only one)")
    e.add_argument("--no-verify", dest="verify", action="store_false", help="skip the sha256 check")
    e.add_argument("--force", action="store_true", help="replace the output file if it exists")
    args = parser.parse_args(argv)
    if args.command == "card":
        return card(args)
    if args.command == "export":
        return export(args)
    try:
        rows, missing = stats.target_stats(args.target, args.root, verify=args.verify, validate=args.validate)
        if args.hist and rows:
            try:
                out = stats.save_histogram(rows, args.hist)
            except OSError as err:
                raise UserInputError(f"--hist {args.hist}: cannot write it ({err.strerror or err})") from None
    except UserInputError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps({"vaults": [{k: v for k, v in r.items() if k != "returns"} for r in rows],
                          "missing": missing}, indent=2))
    else:
        stats.print_table(rows, f"datasets: {args.target}", missing)
    if args.hist:
        if rows:
            print(f"histogram saved to {out}", file=sys.stderr)
        else:
            print("no vault found: histogram not written", file=sys.stderr)
    if missing and not rows:
        print(f"error: no vault found for {args.target} under {args.root}", file=sys.stderr)
        return 1
    return 0


def export(args) -> int:
    from mtmarl.data.vault import export_npz

    try:
        out, shapes = export_npz(args.vault, args.out, uid=args.uid, verify=args.verify, force=args.force)
    except UserInputError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    for key, shape in shapes.items():
        print(f"{key}: {shape}")
    print(f"wrote {out}")
    return 0


def card(args) -> int:
    from mtmarl.data import card as C

    try:
        rows = C.task_rows(args.target, args.root, args.references)
        if args.out:
            paths = C.write_card(args.target, args.root, args.out, args.references, verify=args.verify)
        else:
            datasets = C.dataset_rows(args.target, args.root)
    except UserInputError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    if args.out:
        print("wrote " + ", ".join(str(p) for p in paths))
    elif args.markdown:
        print(C.markdown(rows, datasets))
    else:
        C.print_card(rows, datasets, f"data card: {args.target} ({args.root})")
    if not any(r["has_reference"] or r.get("has_vault") for r in rows):
        print(f"error: no reference or vault for {args.target} under {args.root}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
