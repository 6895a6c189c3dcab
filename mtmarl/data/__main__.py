"""``python -m mtmarl.data stats <vault | task set> [--hist out.png]``: dataset cards of vaults;
``python -m mtmarl.data report <task set> [--markdown]``: references and vault sizes per task;
``python -m mtmarl.data quality <task set> [--markdown]``: expert/medium datasets beside the HyGen paper's Table 5;
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
                   help="also check shapes against the task's env (builds each env; slow for RWARE)")
    r = sub.add_parser("report", help="per task: untrained vs final online return, time, vault size")
    r.add_argument("target", help="a task set name or an ad-hoc task")
    r.add_argument("--root", default=str(stats.DEFAULT_ROOT), help="vault root (default: %(default)s)")
    r.add_argument("--references", default=None, help="references file (default: <root>/references.json)")
    r.add_argument("--markdown", action="store_true", help="print a Markdown table (for a data card)")
    q = sub.add_parser("quality", help="per expert/medium dataset: episodes, return, win rates, the HyGen paper's")
    q.add_argument("target", help="a task set name or an ad-hoc task")
    q.add_argument("--root", default=str(stats.DEFAULT_ROOT), help="vault root (default: %(default)s)")
    q.add_argument("--markdown", action="store_true", help="print a Markdown table (for a data card)")
    e = sub.add_parser("export", help="write one vault as a numpy .npz (og-marl keys, infos/legals, ...)")
    e.add_argument("vault", help="a .vlt (or .vlt/<uid>) directory")
    e.add_argument("out", help="output .npz file")
    e.add_argument("--uid", default=None, help="dataset uid inside the .vlt (default: the only one)")
    e.add_argument("--no-verify", dest="verify", action="store_false", help="skip the sha256 check")
    e.add_argument("--force", action="store_true", help="replace the output file if it exists")
    args = parser.parse_args(argv)
    if args.command == "report":
        return report(args)
    if args.command == "export":
        return export(args)
    if args.command == "quality":
        return quality(args)
    try:
        cards, missing = stats.collect(args.target, args.root, verify=args.verify, validate=args.validate)
        if args.hist and cards:
            try:
                out = stats.save_histogram(cards, args.hist)
            except OSError as err:
                raise UserInputError(f"--hist {args.hist}: cannot write it ({err.strerror or err})") from None
    except UserInputError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps({"vaults": [{k: v for k, v in c.items() if k != "returns"} for c in cards],
                          "missing": missing}, indent=2))
    else:
        stats.print_table(cards, f"datasets: {args.target}", missing)
    if args.hist:
        if cards:
            print(f"histogram saved to {out}", file=sys.stderr)
        else:
            print("no vault found: histogram not written", file=sys.stderr)
    if missing and not cards:
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


def quality(args) -> int:
    from mtmarl.data import quality_card as Q

    try:
        rows = Q.quality_rows(args.target, args.root)
    except UserInputError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    if args.markdown:
        print(Q.markdown(rows))
    else:
        from mtmarl.data.stats import rich_table

        rich_table(f"datasets by quality: {args.target} ({args.root})", [h for _, h in Q.COLUMNS], Q.cells(rows))
    if not any(r["uid"] for r in rows):
        print(f"error: no dataset for {args.target} under {args.root}", file=sys.stderr)
        return 1
    return 0


def report(args) -> int:
    from mtmarl.data import report as R

    try:
        rows = R.task_rows(args.target, args.root, args.references)
    except UserInputError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    if args.markdown:
        print(R.markdown(rows))
    else:
        R.print_table(rows, f"collection: {args.target} ({args.root})")
    found = any(r["has_reference"] or r.get("has_vault") for r in rows)
    if not found:
        print(f"error: no reference or vault for {args.target} under {args.root}", file=sys.stderr)
    return 0 if found else 1


if __name__ == "__main__":
    sys.exit(main())
