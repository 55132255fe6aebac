#!/usr/bin/env python3
"""Setup step: create output/my_first_pipeline/ and write the input measurements."""

import csv
import math
import os
import sys
from pathlib import Path

OUT_DIR = Path("output/my_first_pipeline")


def main() -> int:
    try:
        print("Starting setup...")
        OUT_DIR.mkdir(parents=True, exist_ok=True)
        tmp = OUT_DIR / "measurements.csv.tmp"
        with open(tmp, "w", newline="", encoding="utf-8") as fh:
            writer = csv.writer(fh)
            writer.writerow(["day", "sensor", "value"])
            for day in range(1, 31):
                for sensor in ("a", "b", "c"):
                    offset = {"a": 10.0, "b": 20.0, "c": 15.0}[sensor]
                    writer.writerow([day, sensor, round(offset + 3 * math.sin(day / 3), 3)])
        os.replace(tmp, OUT_DIR / "measurements.csv")
        print(f"Setup completed: {OUT_DIR / 'measurements.csv'}")
        return 0
    except Exception as exc:
        print(f"Setup failed: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
