"""SFT throughput: `posttrain sft` (the stage function) against a bare TRL SFTTrainer, and padding waste with/without
packing.

    python bench/sft_throughput.py                                   # tiny random model (seconds)
    python bench/sft_throughput.py --model smollm2-135m-instruct     # the real 135M model (minutes on 2 cores)

Both trainers get the same model, data and settings (fp32 on CPU, no reporting, no mid-run checkpoints); they run
alternately ``--repeats`` times and the best runs are compared (other jobs on a shared machine only ever slow a run
down, so the fastest run is the closest to the code's own cost; medians are printed too). Trained tokens/s is TRL's
``num_tokens`` (non-padding tokens) over ``train_runtime``; tokens per CPU second divides by the process's CPU time
during ``train()`` instead, which other jobs on a shared machine disturb far less than wall time. Padding waste is
the fraction of pad positions in the batches the stage's collator builds, over one pass of the training set.
Targets: stage/bare >= 0.95, padding waste with packing < 5%.
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

FILLER = ["Let me think about this step by step.", "First, line up the digits.", "Then add the ones column.",
          "Carry the one when the sum passes nine.", "Finally, read the result from left to right.",
          "Checking: the reverse subtraction gives the first number back."]


def synthetic_rows(n: int, seed: int) -> list[dict[str, Any]]:
    """Arithmetic chats whose answers vary from one line to a dozen (so batches of unequal rows need padding)."""
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        a, b = rng.randint(10, 999), rng.randint(10, 999)
        steps = " ".join(rng.choice(FILLER) for _ in range(rng.choice([0, 1, 2, 4, 8, 12])))
        rows.append({"id": f"r{i}", "bucket": "bench", "source": "bench", "tools": "",
                     "messages": [{"role": "user", "content": f"What is {a} + {b}?"},
                                  {"role": "assistant", "content": f"{steps} {a} + {b} = {a + b}.".strip()}]})
    return rows


def write_dataset(folder: Path, rows: list[dict[str, Any]]) -> Path:
    """A chat dataset folder in the `posttrain data build` format."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from posttrain.manifest import write_manifest

    messages = pa.list_(pa.struct([("role", pa.string()), ("content", pa.string())]))
    schema = pa.schema([(c, pa.string()) for c in ("id", "bucket", "source")] + [("messages", messages),
                                                                                ("tools", pa.string())])
    folder.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.Table.from_pylist(rows, schema=schema), folder / "data.parquet")
    write_manifest(folder, {"stage": "data", "kind": "chat", "config": {}, "inputs": {},
                            "metrics": {"rows": len(rows)}})
    return folder


def stage_config(model: str, data: Path, out: Path, args: argparse.Namespace, packing: bool) -> Any:
    from posttrain.stages.sft import SFTStageConfig

    return SFTStageConfig(model=model, data=data, output_dir=out, resume=False, train={
        "max_steps": args.steps, "batch_size": args.batch_size, "learning_rate": 1e-4, "max_length": args.max_length,
        "packing": packing, "report_to": [], "save_steps": 10**6, "precision": "fp32", "seed": 0})


def run_stage(model: str, data: Path, work: Path, args: argparse.Namespace, packing: bool = False) -> dict[str, float]:
    """Tokens per second and per CPU second of one `posttrain sft` run (read back from the manifest it writes)."""
    from posttrain.stages.sft import run_sft

    out = Path(tempfile.mkdtemp(prefix="stage-", dir=work))
    run_sft(stage_config(model, data, out, args, packing))
    metrics = json.loads((out / "manifest.json").read_text())["metrics"]
    return {"wall": metrics["tokens_per_second"], "cpu": metrics["tokens_per_cpu_second"]}


def bare_trainer(model_dir: Path, data: Path, work: Path, args: argparse.Namespace, packing: bool) -> Any:
    """A plain TRL SFTTrainer with the same model, rows and settings, built the way TRL's docs show."""
    import datasets
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import SFTConfig, SFTTrainer

    table = datasets.Dataset.from_parquet(str(data / "data.parquet"))
    rows = datasets.Dataset.from_dict({"messages": table["messages"], "tools": ["[]"] * len(table)})
    config = SFTConfig(output_dir=str(Path(tempfile.mkdtemp(prefix="bare-", dir=work))), max_steps=args.steps,
                       per_device_train_batch_size=args.batch_size, learning_rate=1e-4, max_length=args.max_length,
                       packing=packing, assistant_only_loss=True, bf16=False, use_cpu=not torch.cuda.is_available(),
                       gradient_checkpointing=False, report_to=[], save_strategy="no", logging_steps=1, seed=0,
                       lr_scheduler_type="cosine", disable_tqdm=True)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    return SFTTrainer(model=model, args=config, train_dataset=rows, processing_class=AutoTokenizer.from_pretrained(
        model_dir))


def run_bare(model_dir: Path, data: Path, work: Path, args: argparse.Namespace) -> dict[str, float]:
    trainer = bare_trainer(model_dir, data, work, args, packing=False)
    cpu_start = time.process_time()
    result = trainer.train()
    cpu = time.process_time() - cpu_start
    tokens = [row["num_tokens"] for row in trainer.state.log_history if "num_tokens" in row][-1]
    return {"wall": tokens / result.metrics["train_runtime"], "cpu": tokens / cpu}


def padding_waste(model_dir: Path, data: Path, work: Path, args: argparse.Namespace, packing: bool) -> dict[str, float]:
    """Pad positions / all positions over one pass of the training batches the stage's settings produce."""
    import datasets
    from trl import SFTTrainer

    from posttrain.models.loading import load_tokenizer
    from posttrain.stages.sft import SFTTrain, chat_rows
    from posttrain.training.arguments import sft_arguments
    from posttrain.training.model import load_model

    train = SFTTrain(batch_size=args.batch_size, max_length=args.max_length, packing=packing, report_to=[],
                     precision="fp32")
    rows = chat_rows(datasets.Dataset.from_parquet(str(data / "data.parquet")), data, need_assistant=True)
    model, _ = load_model(model_dir)
    trainer = SFTTrainer(model=model, args=sft_arguments(train, Path(tempfile.mkdtemp(dir=work)), evaluate=False,
                                                         assistant_only_loss=True),
                         train_dataset=rows, processing_class=load_tokenizer(model_dir))
    real = total = batches = 0
    for batch in trainer.get_train_dataloader():
        positions = batch["input_ids"].numel()
        # Padding-free batches (packing) hold no pad positions; padded batches mark them in attention_mask.
        real += int(batch["attention_mask"].sum()) if "attention_mask" in batch else positions
        total += positions
        batches += 1
    return {"pad_fraction": 1 - real / total, "tokens_per_batch": real / batches, "batches": batches}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="tiny", help="'tiny' (built here), a known name or a model folder")
    parser.add_argument("--steps", type=int, default=12)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--max-length", type=int, default=512)
    parser.add_argument("--rows", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, help="torch threads (1 makes CPU-time measurements steadiest)")
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args()
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)

    import datasets
    import transformers
    from rich.console import Console
    from rich.table import Table

    from posttrain.models.loading import resolve_model
    from posttrain.models.tiny import make_tiny_model

    datasets.disable_progress_bars()
    transformers.logging.set_verbosity_error()
    console = Console()
    with tempfile.TemporaryDirectory(prefix="sft-bench-") as tmp:
        work = Path(tmp)
        model_dir = make_tiny_model(work / "tiny") if args.model == "tiny" else resolve_model(args.model)
        data = write_dataset(work / "data", synthetic_rows(args.rows, seed=0))

        stage, bare = [], []
        for _ in range(args.repeats):  # alternate, so slow phases of a shared machine hit both sides alike
            stage.append(run_stage(str(model_dir), data, work, args))
            bare.append(run_bare(model_dir, data, work, args))
        packed_stage = run_stage(str(model_dir), data, work, args, packing=True)
        unpacked = padding_waste(model_dir, data, work, args, packing=False)
        packed = padding_waste(model_dir, data, work, args, packing=True)

    def best(runs: list[dict[str, float]], key: str) -> float:
        return max(r[key] for r in runs)

    def median(runs: list[dict[str, float]], key: str) -> float:
        return statistics.median(r[key] for r in runs)

    results = {
        "model": args.model, "steps": args.steps, "batch_size": args.batch_size, "max_length": args.max_length,
        "threads": args.threads, "stage_tokens_per_s": best(stage, "wall"), "bare_trl_tokens_per_s": best(bare, "wall"),
        "ratio": best(stage, "wall") / best(bare, "wall"),
        "median_ratio": median(stage, "wall") / median(bare, "wall"),
        "stage_tokens_per_cpu_s": best(stage, "cpu"), "bare_trl_tokens_per_cpu_s": best(bare, "cpu"),
        "cpu_ratio": best(stage, "cpu") / best(bare, "cpu"),
        "stage_runs": stage, "bare_runs": bare, "stage_packed_tokens_per_s": packed_stage["wall"],
        "pad_fraction_unpacked": unpacked["pad_fraction"], "pad_fraction_packed": packed["pad_fraction"],
        "tokens_per_batch_unpacked": unpacked["tokens_per_batch"],
        "tokens_per_batch_packed": packed["tokens_per_batch"],
    }
    table = Table(title=f"SFT throughput ({args.model}, {args.steps} steps, batch {args.batch_size})")
    table.add_column("measure")
    table.add_column("value", justify="right")
    table.add_column("target", justify="right")
    table.add_row("posttrain sft, tokens/s (best run)", f"{results['stage_tokens_per_s']:.1f}", "")
    table.add_row("bare TRL SFTTrainer, tokens/s (best run)", f"{results['bare_trl_tokens_per_s']:.1f}", "")
    table.add_row("ratio stage / bare (best runs)", f"{results['ratio']:.3f}", ">= 0.95")
    table.add_row("ratio stage / bare (medians)", f"{results['median_ratio']:.3f}", "")
    table.add_row("posttrain sft / bare TRL, tokens per CPU second (best)",
                  f"{results['stage_tokens_per_cpu_s']:.1f} / {results['bare_trl_tokens_per_cpu_s']:.1f}", "")
    table.add_row("ratio stage / bare per CPU second", f"{results['cpu_ratio']:.3f}", ">= 0.95")
    table.add_row("posttrain sft packed, tokens/s", f"{packed_stage['wall']:.1f}", "")
    table.add_row("padding waste, no packing", f"{unpacked['pad_fraction']:.1%}", "")
    table.add_row("padding waste, packing (bfd)", f"{packed['pad_fraction']:.1%}", "< 5%")
    table.add_row("real tokens per batch, no packing / packing",
                  f"{unpacked['tokens_per_batch']:.0f} / {packed['tokens_per_batch']:.0f}", "")
    console.print(table)
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
