"""Side-by-side load benchmark: the code at BASE and the code here, in one sitting.

`make bench-compare BASE=<commit>` (or `python bench/compare.py --base <commit>`) checks BASE out
into a throwaway worktree, installs it there with its own `make dev`, and runs this checkout's
`bench/load.py` against each pipeline in turn (BASE first, then here; `--rounds N` alternates
N times and reports the median), so both are measured by the same load generator on the same
machine within minutes. This machine's speed varies by up to 1.7x from day to day: compare only
figures taken together.

Targets, for the code here: nothing lost; CPU per order no worse than 1.1x BASE's; POST p99 under
50 ms and POST -> mailed p99 under 2 s. Exit status 0 when all hold, 1 otherwise, 2 when a run
could not be made.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
CPU_RATIO_TARGET = 1.10
POST_P99_TARGET_MS = 50.0
MAILED_P99_TARGET_S = 2.0

# (key in load.py's --json, label, format)
FIGURES = (
    ("accepted_rate", "accepted rate", "{:.1f}/s"),
    ("post_p50_ms", "POST p50", "{:.1f} ms"),
    ("post_p99_ms", "POST p99", "{:.1f} ms"),
    ("mailed_p99_s", "POST -> mailed p99", "{:.2f} s"),
    ("cpu_ms_per_order", "CPU per accepted order", "{:.2f} ms"),
    ("peak_rss_mib", "peak RSS (sum of processes)", "{:.0f} MiB"),
    ("non_202", "non-202 answers", "{:.0f}"),
    ("lost", "lost", "{:.0f}"),
)


def run(command: list[str], cwd: Path) -> None:
    print("+", " ".join(command), flush=True)
    subprocess.run(command, cwd=cwd, check=True)


def checkout(base: str, into: Path) -> str:
    """BASE in a detached worktree at `into`, installed by its own `make dev`; its short hash."""
    short = subprocess.run(
        ["git", "rev-parse", "--short", base], cwd=ROOT, check=True, capture_output=True, text=True
    ).stdout.strip()
    run(["git", "worktree", "add", "--detach", "--force", str(into), base], ROOT)
    run(["make", "dev"], into)
    return short


def load(root: Path, args: argparse.Namespace, out: Path) -> dict[str, Any]:
    command = [
        sys.executable,
        str(ROOT / "bench" / "load.py"),
        "--rate",
        f"{args.rate:g}",
        "--duration",
        f"{args.duration:g}",
        "--pipeline-root",
        str(root),
        "--json",
        str(out),
    ]
    print("+", " ".join(command), flush=True)
    subprocess.run(command, cwd=ROOT, check=False)  # exit 1 (lost orders) still reports figures
    figures: dict[str, Any] = json.loads(out.read_text())
    return figures


def median(runs: list[dict[str, Any]], key: str) -> float | None:
    values = [r[key] for r in runs if r.get(key) is not None]
    return statistics.median(values) if values else None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--base",
        required=True,
        help="the commit to compare with (e.g. main~3), or the folder of a checkout installed with make dev",
    )
    parser.add_argument("--rate", type=float, default=150.0, help="orders a second (150)")
    parser.add_argument("--duration", type=float, default=60.0, help="measured seconds of each run (60)")
    parser.add_argument("--rounds", type=int, default=1, help="runs of each, alternating (1)")
    args = parser.parse_args(argv)

    workdir = Path(tempfile.mkdtemp(prefix="orderpipe-compare-"))
    given = Path(args.base)
    base_root = given.resolve() if (given / ".venv").is_dir() else workdir / "base"
    try:
        try:
            base_name = checkout(args.base, base_root) if base_root == workdir / "base" else given.name
        except subprocess.CalledProcessError as error:
            print(f"compare.py: cannot set up {args.base}: {error}", file=sys.stderr)
            return 2
        runs: dict[str, list[dict[str, Any]]] = {"base": [], "here": []}
        try:
            for round_number in range(args.rounds):
                for name, root in (("base", base_root), ("here", ROOT)):
                    runs[name].append(load(root, args, workdir / f"{name}-{round_number}.json"))
        except (OSError, ValueError) as error:
            print(f"compare.py: a run did not report: {error}", file=sys.stderr)
            return 2
    finally:
        if base_root == workdir / "base":
            subprocess.run(["git", "worktree", "remove", "--force", str(base_root)], cwd=ROOT, check=False)
        shutil.rmtree(workdir, ignore_errors=True)

    base = {key: median(runs["base"], key) for key, _, _ in FIGURES}
    here = {key: median(runs["here"], key) for key, _, _ in FIGURES}
    print()
    print(f"orderpipe: {args.rate:g} orders/s for {args.duration:g} s, median of {args.rounds} run(s) each")
    print(f"  {'':<30} {'base ' + base_name:>16} {'here':>16} {'here/base':>10}")
    for key, label, form in FIGURES:
        b, h = base[key], here[key]
        ratio = f"{h / b:.2f}x" if b and h is not None else ""
        print(
            f"  {label:<30} {form.format(b) if b is not None else '-':>16}"
            f" {form.format(h) if h is not None else '-':>16} {ratio:>10}"
        )
    checks = {
        "nothing lost": here["lost"] == 0,
        f"CPU per order <= {CPU_RATIO_TARGET:.2f}x base": (
            base["cpu_ms_per_order"] is not None
            and here["cpu_ms_per_order"] is not None
            and here["cpu_ms_per_order"] <= CPU_RATIO_TARGET * base["cpu_ms_per_order"]
        ),
        f"POST p99 < {POST_P99_TARGET_MS:g} ms": (here["post_p99_ms"] or 1e9) < POST_P99_TARGET_MS,
        f"POST -> mailed p99 < {MAILED_P99_TARGET_S:g} s": (here["mailed_p99_s"] or 1e9)
        < MAILED_P99_TARGET_S,
    }
    for label, ok in checks.items():
        print(f"  {'met' if ok else 'MISSED':<7} {label}")
    return 0 if all(checks.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
