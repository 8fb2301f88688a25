"""Rejection sampling: the pieces ``posttrain sample`` is built from.

* :mod:`~posttrain.tasks`: task rows from a bucket recipe or a built task dataset, cut into batches;
* :mod:`~posttrain.rejection.overlap`: generate batch i+1 while batch i is verified (bounded memory);
* :mod:`~posttrain.rejection.shards`: one JSONL shard per finished batch, written atomically; resume reads them back;
* :mod:`~posttrain.rejection.selection`: which verified successes of a prompt become SFT rows;
* :mod:`~posttrain.rejection.metrics`: pass@k (unbiased estimator) and the per-bucket report.
"""
