"""A trainer's data: a ``posttrain data build`` folder of the kind the stage needs, and a held-out split."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from posttrain.errors import UserError
from posttrain.manifest import MANIFEST, file_sha256, model_sha256, read_manifest


def built_dataset(data: Path, kind: str, source: str) -> tuple[Any, dict[str, Any]]:
    """Load a ``posttrain data build`` folder of the given kind -> (datasets.Dataset, its manifest)."""
    from posttrain.data import load_built

    if not data.is_dir():
        raise UserError(f"{source}: data: folder {str(data)!r} not found; expected a folder written by "
                        "`posttrain data build` (data.parquet + manifest.json)")
    manifest = read_manifest(data)
    if manifest.get("kind") != kind:
        raise UserError(f"{source}: data: {data} holds {manifest.get('kind')!r} rows; this stage needs a {kind!r} "
                        "dataset (recipe kind)")
    return load_built(data), manifest


def split_eval(dataset: Any, fraction: float, seed: int) -> tuple[Any, Any | None]:
    """Hold out ``fraction`` of the rows (at least one) for evaluation; None when the fraction is 0."""
    if fraction <= 0:
        return dataset, None
    n_eval = max(1, round(len(dataset) * fraction))
    if n_eval >= len(dataset):
        raise UserError(f"train.eval_fraction={fraction} leaves no training rows out of {len(dataset)}")
    parts = dataset.train_test_split(test_size=n_eval, seed=seed, shuffle=True)
    return parts["train"], parts["test"]


def training_inputs(data_dir: Path, model_dir: Path) -> dict[str, str]:
    """What decides a training run's result besides its config: the built dataset and the starting model."""
    return {str(data_dir / MANIFEST): file_sha256(data_dir / MANIFEST), str(model_dir): model_sha256(model_dir)}


def model_and_dataset(cfg: Any, kind: str, source: str) -> tuple[Path, Any, dict[str, str]]:
    """A dataset stage's inputs (``cfg.model``, ``cfg.data`` of ``kind``) -> (model folder, dataset, input hashes)."""
    from posttrain.models.loading import resolve_model

    model_dir = resolve_model(cfg.model, key=f"{source}: model")
    dataset, _ = built_dataset(cfg.data, kind, source)
    return model_dir, dataset, training_inputs(cfg.data, model_dir)
