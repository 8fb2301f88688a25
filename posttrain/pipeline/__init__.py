"""The whole recipe as one resumable run: ``posttrain pipeline --config configs/kanana2.yaml``.

    config.py   the pipeline config (run folder, starting model, one section per stage)
    graph.py    which folder each stage reads and writes (wiring, pass-through of disabled stages)
    stages.py   calling each stage, what it reads, its key numbers
    state.py    fingerprints and per-stage records (skip and resume)
    runner.py   running the graph
    summary.py  the table, summary.json / summary.md, plots
"""

from posttrain.pipeline.config import STAGES, PipelineConfig, load_pipeline_config
from posttrain.pipeline.runner import dry_run, run_pipeline
from posttrain.pipeline.stages import StageFailed

__all__ = ["STAGES", "PipelineConfig", "StageFailed", "dry_run", "load_pipeline_config", "run_pipeline"]
