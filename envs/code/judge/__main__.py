"""``python -I -S .../judge/__main__.py``: judge one job from stdin (one sandbox per run); with ``candidate REQUEST
FD...``: a candidate process started from a fresh interpreter (launcher.spawn_fresh)."""

import json
import os
import sys

if __name__ == "__main__":
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    if sys.argv[1:2] == ["candidate"]:
        from judge.launcher import candidate_main

        candidate_main(json.loads(sys.argv[2]), [int(fd) for fd in sys.argv[3:]])
    from judge.main import cold_main

    cold_main()
