#!/usr/bin/env python3
"""Report step: a plain-text report of the statistics."""

import csv
import sys
from datetime import UTC, datetime
from pathlib import Path

OUT_DIR = Path("output/my_first_pipeline")


def main() -> int:
    source = OUT_DIR / "stats.csv"
    if not source.exists():
        print(f"{source} not found; run the analyze step first", file=sys.stderr)
        return 1
    try:
        print("Starting report...")
        with open(source, encoding="utf-8") as fh:
            rows = list(csv.DictReader(fh))
        lines = [f"Sensor report ({datetime.now(UTC):%Y-%m-%d})", ""]
        for row in rows:
            lines.append(
                f"sensor {row['sensor']}: mean {float(row['mean']):.2f} "
                f"(min {float(row['min']):.2f}, max {float(row['max']):.2f}, n={row['count']})"
            )
        tmp = OUT_DIR / "report.txt.tmp"
        tmp.write_text("\n".join(lines) + "\n", encoding="utf-8")
        tmp.replace(OUT_DIR / "report.txt")
        print(f"Report written to {OUT_DIR / 'report.txt'}")
        return 0
    except Exception as exc:
        print(f"Report failed: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
