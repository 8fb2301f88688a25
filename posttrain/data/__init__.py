"""Bucket recipes -> mixed datasets: ``build_dataset(recipe, out)`` writes ``out/data.parquet`` + ``out/manifest.json``;
``load_built(out)`` reads it back as a ``datasets.Dataset``. See docs/data_recipes.md."""

from posttrain.data.build import build_dataset
from posttrain.data.output import load_built
from posttrain.data.recipe import Recipe, load_recipe

__all__ = ["Recipe", "build_dataset", "load_built", "load_recipe"]
