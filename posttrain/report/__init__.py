"""What a person sees: the consoles, the one progress idiom every stage reports through, and tables.

    console.py   ``console`` (stderr: messages and live progress) and ``results`` (stdout: what a command produced)
    progress.py  ``Progress``: ``say(message)`` for a person, ``event(kind, ...)`` for a live board (the RL tracks')
    tables.py    the key/value summary a stage prints when it finishes, row tables
    live.py      the live bar over a known number of jobs

Nothing here imports the CLI, so the pipeline (also a Ray job) and Ray tasks can use it.
"""

from posttrain.report.console import console, results, say
from posttrain.report.progress import Progress, as_progress

__all__ = ["Progress", "as_progress", "console", "results", "say"]
