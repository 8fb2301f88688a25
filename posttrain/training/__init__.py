"""The trainer kit every training stage is built from (midtrain, sft, rm, the Chat track's DPO, the Logic track's
GRPO/RLOO, calibration tuning): nothing here knows which stage calls it.

    settings.py    the shared ``train`` sections (pydantic, nothing heavy imported) and LoRA
    arguments.py   the one mapping from a ``train`` section to a TRL/transformers arguments object
    callbacks.py   what a trainer reports: the rich progress line, events to a Progress sink, TensorBoard
    checkpoints.py resuming from the newest checkpoint, and the train-then-evaluate call
    model.py       loading the model to train (fp32 master weights) and saving the result in its stored dtype
    data.py        built datasets of a kind, held-out splits
    outputs.py     metrics.jsonl, the manifest and the numbers it keeps
"""
