#!/usr/bin/env python3
"""Analyze step: per-sensor statistics of the measurements."""

import sys
from pathlib import Path

import pandas as pd

OUT_DIR = Path("output/my_first_pipeline")


def main() -> int:
    source = OUT_DIR / "measurements.csv"
    if not source.exists():
        print(f"{source} not found; run the setup step first", file=sys.stderr)
        return 1
    try:
        print("Starting analyze...")
        df = pd.read_csv(source)
        stats = df.groupby("sensor")["value"].agg(["count", "mean", "std", "min", "max"]).round(3)
        tmp = OUT_DIR / "stats.csv.tmp"
        stats.to_csv(tmp)
        tmp.replace(OUT_DIR / "stats.csv")
        print(stats.to_string())
        return 0
    except Exception as exc:
        print(f"Analyze failed: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
