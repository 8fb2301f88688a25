"""The whole recipe as one resumable run: ``posttrain pipeline --config configs/kanana2.yaml``.

    config.py   the pipeline config (run folder, starting model, one section per registered stage)
    graph.py    which folder each stage reads and writes (each stage's wiring, pass-through of disabled stages)
    state.py    what a stage reads, fingerprints and per-stage records (skip and resume)
    runner.py   running the graph
    summary.py  the table, summary.json / summary.md, plots
"""

from posttrain.errors import StageFailed
from posttrain.pipeline.config import PipelineConfig, load_pipeline_config
from posttrain.pipeline.runner import dry_run, run_pipeline

__all__ = ["PipelineConfig", "StageFailed", "dry_run", "load_pipeline_config", "run_pipeline"]
