#!/usr/bin/env python3
"""Step 2 of the example pipeline: clean the raw CSV with pandas."""

import sys
from pathlib import Path

import pandas as pd

OUT_DIR = Path("output/example_pipeline")


def main() -> int:
    raw_path = OUT_DIR / "raw_sales.csv"
    if not raw_path.exists():
        print(f"{raw_path} not found; run the fetch_data step first", file=sys.stderr)
        return 1
    try:
        print("Starting clean_data...")
        df = pd.read_csv(raw_path)
        before = len(df)
        df["region"] = df["region"].astype(str).str.strip().str.lower()
        df["amount"] = pd.to_numeric(df["amount"], errors="coerce")
        df = df.dropna(subset=["amount"])
        tmp = OUT_DIR / "clean_sales.csv.tmp"
        df.to_csv(tmp, index=False)
        tmp.replace(OUT_DIR / "clean_sales.csv")
        print(f"Kept {len(df)} of {before} rows ({before - len(df)} dropped)")
        return 0
    except Exception as exc:
        print(f"clean_data failed: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
