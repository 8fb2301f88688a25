"""The module a warm sandbox's zygote imports once (``judge.warm``): ``handle`` runs a job, ``child`` a candidate.

It also imports what candidates commonly import: every job and every candidate process is a fork of the zygote, so
they start with these loaded instead of importing them each time, as a fresh interpreter would. Nothing flows back:
what a candidate does to a module changes only its own process's copy.
"""

import importlib

from .candidate import candidate_main as child
from .main import handle

PRELOADED = ("bisect", "collections", "dataclasses", "decimal", "fractions", "functools", "hashlib", "heapq",
             "itertools", "math", "operator", "random", "re", "statistics", "string", "traceback", "typing")
for _name in PRELOADED:
    importlib.import_module(_name)

__all__ = ["child", "handle"]
