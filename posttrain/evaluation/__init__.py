"""Pieces of ``posttrain eval`` (the stage itself reads top to bottom in :mod:`posttrain.stages.eval`):

* :mod:`~posttrain.evaluation.config`: the ``eval`` config (models, verifiable sets, pass@k, the chat win rate);
* :mod:`~posttrain.evaluation.workers`: one set of rollout workers for many models, switched by weight updates;
* :mod:`~posttrain.evaluation.metrics`: accuracy and pass@k per set and bucket from verified sample records;
* :mod:`~posttrain.evaluation.chat`: held-out chat prompts, answers, reward-model scores and win rates;
* :mod:`~posttrain.evaluation.table`: the comparison table (rows = models), as markdown and as a rich table.
"""
