"""Adaptive resampling: spend samples where they can still find a verified answer.

* ``resample_unsolved`` (``posttrain sample``): a prompt with no verified sample after its first ``n`` samples gets
  that many more (a second pass over only those prompts, seeded apart from the first), so hard prompts get a second
  chance without sampling the easy ones again;
* ``skip_solved`` (``posttrain rs``): a prompt verified that many times in earlier rounds is left out of the next
  rounds' sampling (its solutions are already in the training data), done by sampling a subset of the task dataset.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from posttrain.manifest import file_sha256, write_manifest


def verified_passes(shard_folders: Iterable[Path]) -> Counter[str]:
    """How many verified samples each prompt (task row id) has in these shard folders."""
    import json

    counts: Counter[str] = Counter()
    for folder in shard_folders:
        for shard in sorted(Path(folder).glob("batch_*.jsonl")):
            for line in shard.read_text(encoding="utf-8").splitlines():
                record = json.loads(line)
                counts[record["id"]] += sum(bool(s["passed"]) for s in record["samples"])
    return counts


def write_task_subset(source: Path, keep: set[str], out: Path, why: dict[str, Any]) -> Path:
    """``out``: the rows of the built task dataset ``source`` whose id is in ``keep``, in their order, as a dataset of
    the same contract (what ``sample``'s ``tasks: {dataset: ...}`` reads)."""
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    table = pq.read_table(Path(source) / "data.parquet")
    subset = table.filter(pc.is_in(table["id"], value_set=pa.array(sorted(keep), type=pa.string())))
    out.mkdir(parents=True, exist_ok=True)
    tmp = out / "data.parquet.tmp"
    pq.write_table(subset, tmp, compression="zstd")
    tmp.replace(out / "data.parquet")
    write_manifest(out, {"stage": "data", "kind": "task", "config": {"subset_of": str(source), **why},
                         "inputs": {str(Path(source) / "data.parquet"): file_sha256(Path(source) / "data.parquet")},
                         "outputs": {"data.parquet": file_sha256(out / "data.parquet")},
                         "metrics": {"rows": subset.num_rows, "rows_source": table.num_rows}})
    return out
