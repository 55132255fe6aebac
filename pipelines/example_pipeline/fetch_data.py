#!/usr/bin/env python3
"""Step 1 of the example pipeline: write a raw sales CSV (deterministic, with a few bad rows)."""

import csv
import os
import random
import sys
from pathlib import Path

OUT_DIR = Path("output/example_pipeline")
REGIONS = ["north", "south", "east", "west"]


def main() -> int:
    try:
        print("Starting fetch_data...")
        OUT_DIR.mkdir(parents=True, exist_ok=True)
        rng = random.Random(42)
        rows = []
        for order_id in range(1, 501):
            region = rng.choice(REGIONS)
            amount = round(rng.lognormvariate(3.5, 0.6), 2)
            if order_id % 97 == 0:
                amount = ""  # the raw source has gaps
            if order_id % 131 == 0:
                region = " North "  # and inconsistent labels
            rows.append({"order_id": order_id, "region": region, "amount": amount})
        tmp = OUT_DIR / "raw_sales.csv.tmp"
        with open(tmp, "w", newline="", encoding="utf-8") as fh:
            writer = csv.DictWriter(fh, fieldnames=["order_id", "region", "amount"])
            writer.writeheader()
            writer.writerows(rows)
        os.replace(tmp, OUT_DIR / "raw_sales.csv")
        print(f"Wrote {len(rows)} rows to {OUT_DIR / 'raw_sales.csv'}")
        return 0
    except Exception as exc:
        print(f"fetch_data failed: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
