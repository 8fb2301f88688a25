"""``python -I -S .../judge/__main__.py``: judge one job from stdin (one sandbox per run)."""

import os
import sys

if __name__ == "__main__":
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    from judge.main import cold_main

    cold_main()
