"""Instructions and simulated cache misses per routed change, counted by cachegrind.

`routing_loop.py` times routing; on this shared 2-core VM a single timing moves ±25%.
This script runs the same loop under `valgrind --tool=cachegrind`, which counts
instructions and simulates the data caches, so its figures are the same on every run
whatever the neighbours do. Each shape count runs twice, with `--short` and `--long`
transactions; the difference between the two, divided by the extra changes, is the cost
of one change with building the shapes (and interpreter start-up) taken out.

It answers "is routing flat in the number of shapes?" in two parts: the instructions
(the algorithm: an index lookup is the same work whatever the number of shapes) and the
last-level cache misses (the memory a change touches that was not in cache, which grows
once the shapes' state outgrows the caches).

    uv run python bench/routing_counts.py --shapes 1000,10000
    uv run python bench/routing_counts.py --shapes 1000,10000 --src /tmp/other/src

The cache model is this machine's: 32 KiB 8-way L1d, and a last level of --ll-bytes
(default 32 MiB 16-way, the L3 `lscpu` shows; use 1 MiB 8-way for the L2).
Runs take ~3 minutes per shape count and use one core each; counts run two at a time.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path

import orjson

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"
_TOTAL = re.compile(r"==\d+== (I +refs|D1 +misses|LLd misses):\s+([\d,]+)")
NAMES = {"I refs": "instructions", "D1 misses": "l1d_misses", "LLd misses": "ll_misses"}


def count(shapes: int, transactions: int, args: argparse.Namespace) -> dict[str, int]:
    """Program totals of one routing loop under cachegrind."""
    env = dict(os.environ)
    if args.src:
        env["PYTHONPATH"] = str(args.src)
    with tempfile.TemporaryDirectory(prefix="fusebox-counts-") as scratch:
        command = [
            "valgrind",
            "--tool=cachegrind",
            "--cache-sim=yes",
            "--D1=32768,8,64",
            f"--LL={args.ll_bytes},{args.ll_ways},64",
            f"--cachegrind-out-file={scratch}/out",
            sys.executable,
            str(ROOT / "bench" / "routing_loop.py"),
            f"--shapes={shapes}",
            f"--transactions={transactions}",
            f"--tenants={args.tenants}",
        ]
        done = subprocess.run(command, env=env, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise SystemExit(f"cachegrind run failed ({shapes} shapes):\n{done.stderr[-2000:]}")
    totals = {}
    for name, value in _TOTAL.findall(done.stderr):
        totals[NAMES[re.sub(r" +", " ", name)]] = int(value.replace(",", ""))
    return totals


def per_change(shapes: int, args: argparse.Namespace) -> dict:
    short = count(shapes, args.short, args)
    long = count(shapes, args.long, args)
    changes = (args.long - args.short) * 1000
    return {
        "shapes": shapes,
        **{name: round((long[name] - short[name]) / changes, 1) for name in NAMES.values()},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--shapes", default="1000,10000", help="comma-separated counts")
    parser.add_argument("--short", type=int, default=20, help="transactions of 1,000 rows")
    parser.add_argument("--long", type=int, default=60, help="transactions of 1,000 rows")
    parser.add_argument("--tenants", choices=["spread", "random"], default="spread")
    parser.add_argument("--ll-bytes", type=int, default=32 * 1024 * 1024)
    parser.add_argument("--ll-ways", type=int, default=16)
    parser.add_argument("--src", type=Path, help="a src/ directory to count instead of ours")
    args = parser.parse_args()
    if shutil.which("valgrind") is None:
        raise SystemExit("valgrind is not installed: apt-get install valgrind")
    counts = [int(part) for part in args.shapes.split(",") if part]
    with ThreadPoolExecutor(2) as pool:
        rows = list(pool.map(lambda shapes: per_change(shapes, args), counts))
    print(
        f"per change ({args.tenants} tenants; LL {args.ll_bytes // 1024} KiB "
        f"{args.ll_ways}-way; {args.long - args.short:,} transactions' difference):"
    )
    for row in rows:
        print(
            f"  {row['shapes']:>7,} shapes: {row['instructions']:>9,.0f} instructions, "
            f"{row['l1d_misses']:>6,.1f} L1d misses, {row['ll_misses']:>5,.1f} LL misses"
        )
    RESULTS.mkdir(parents=True, exist_ok=True)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    path = RESULTS / f"routing-counts-{stamp}.json"
    path.write_bytes(orjson.dumps({"arguments": vars(args), "per_change": rows}, default=str))
    print(f"  raw results: {path.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
