"""Regenerate the Chat track's sample preference pairs under data_recipes/samples/ (deterministic).

    .venv/bin/python scripts/make_preference_data.py [OUT_DIR]

Writes preference_helpfulness.jsonl and preference_safety.jsonl (see posttrain/preference/samples.py for what the
pairs contain and why each chosen answer is the better one).
"""

from __future__ import annotations

import sys
from pathlib import Path

from posttrain.preference.samples import write_preference_samples


def main() -> None:
    out = Path(sys.argv[1]) if len(sys.argv) > 1 else Path(__file__).resolve().parent.parent / "data_recipes/samples"
    for name, n in write_preference_samples(out).items():
        size = (out / name).stat().st_size
        print(f"{out / name}: {n} rows, {size / 1024:.1f} KiB")


if __name__ == "__main__":
    main()
