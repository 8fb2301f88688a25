"""Regenerate the sample data under data_recipes/samples/ (deterministic: re-running changes nothing).

    .venv/bin/python scripts/make_sample_data.py [OUT_DIR]
"""

from __future__ import annotations

import sys
from pathlib import Path

from posttrain.data.samples import write_samples


def main() -> None:
    out = Path(sys.argv[1]) if len(sys.argv) > 1 else Path(__file__).resolve().parent.parent / "data_recipes/samples"
    for name, n in write_samples(out).items():
        size = (out / name).stat().st_size
        print(f"{out / name}: {n} rows, {size / 1024:.1f} KiB")


if __name__ == "__main__":
    main()
