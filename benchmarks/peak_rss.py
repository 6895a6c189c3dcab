"""Peak resident memory of a command, sampled every second from /proc (where the main job's RSS goes).

    python benchmarks/peak_rss.py --out benchmarks/results/peak_rss_main_job.txt -- \\
        python -m mtmarl.train +algo=mt_oryx +tasks=rware_15 hydra.run.dir=/tmp/rss_run

Writes one ``seconds RSS_MiB`` line per sample and a final summary line (peak and when). Linux only.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path


def rss_kib(pid: int) -> int | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS"):
                return int(line.split()[1])
    except (FileNotFoundError, ProcessLookupError):
        return None
    return None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--every", type=float, default=1.0, help="seconds between samples")
    parser.add_argument("command", nargs=argparse.REMAINDER)
    args = parser.parse_args(argv)
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    if not command:
        parser.error("give the command after --")
    start, peak, at, rows = time.time(), 0, 0.0, []
    with subprocess.Popen(command) as proc:
        while proc.poll() is None:
            kib = rss_kib(proc.pid)
            if kib is not None:
                t = time.time() - start
                rows.append(f"{t:.0f} {kib / 1024:.0f}")
                if kib > peak:
                    peak, at = kib, t
            time.sleep(args.every)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    summary = f"# peak {peak / 2**20:.2f} GiB at {at:.0f} s of {time.time() - start:.0f} s; exit {proc.returncode}"
    args.out.write_text("\n".join([f"# {' '.join(command)}", *rows, summary]) + "\n")
    print(summary)
    return proc.returncode


if __name__ == "__main__":
    sys.exit(main())
