"""The task vocabulary every stage that samples and verifies shares (sample, rs, rl-logic, calibrate, eval):

    rows.py     where task prompts come from (``TasksConfig``), task rows, single-environment batches, per-row seeds
    verify.py   the ``verify`` section and starting one verifier pool per environment

The pool itself is :mod:`posttrain.verify_pool`.
"""

from posttrain.tasks.rows import Batch, TaskRow, TasksConfig, load_tasks, make_batches, row_seed
from posttrain.tasks.verify import Verifiers, VerifySettings

__all__ = ["Batch", "TaskRow", "TasksConfig", "Verifiers", "VerifySettings", "load_tasks", "make_batches",
           "row_seed"]
