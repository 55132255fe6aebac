#!/usr/bin/env python3
"""Step 3 of the example pipeline: revenue statistics per region, as JSON."""

import json
import sys
from pathlib import Path

import pandas as pd

OUT_DIR = Path("output/example_pipeline")


def main() -> int:
    clean_path = OUT_DIR / "clean_sales.csv"
    if not clean_path.exists():
        print(f"{clean_path} not found; run the clean_data step first", file=sys.stderr)
        return 1
    try:
        print("Starting summarize_data...")
        df = pd.read_csv(clean_path)
        stats = df.groupby("region")["amount"].agg(["count", "sum", "mean", "median"]).round(2)
        summary = {
            "orders": len(df),
            "revenue": round(float(df["amount"].sum()), 2),
            "by_region": stats.to_dict(orient="index"),
        }
        tmp = OUT_DIR / "summary.json.tmp"
        tmp.write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
        tmp.replace(OUT_DIR / "summary.json")
        print(stats.to_string())
        print(f"Summary written to {OUT_DIR / 'summary.json'}")
        return 0
    except Exception as exc:
        print(f"summarize_data failed: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
