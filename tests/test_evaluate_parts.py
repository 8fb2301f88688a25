"""`posttrain eval` pieces and bad input: the win rate with a deterministic scorer, which models may share running
workers, the markdown table, and configs or inputs that must fail with a message naming the file and key (before
any worker starts)."""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import pytest

from posttrain.config import load_config
from posttrain.errors import UserError
from posttrain.evaluation.chat import compare
from posttrain.evaluation.metrics import set_metrics
from posttrain.evaluation.table import comparison, markdown
from posttrain.evaluation.workers import architecture_key, load_order
from posttrain.stages.eval import EvalConfig, run_eval

ROOT = Path(__file__).resolve().parent.parent
PREFERENCE_TINY = ROOT / "data_recipes/preference_tiny.yaml"
HELDOUT = ROOT / "data_recipes/rs_tasks_heldout.yaml"


class LengthScorer:
    """Longer answers score higher; an answer containing "?" cannot be scored (like a judge reply without a number)."""

    name = "length"

    def __init__(self) -> None:
        self.calls = 0

    def score(self, prompts, responses):
        self.calls += 1
        assert len(prompts) == len(responses)
        return [None if "?" in r else float(len(r)) for r in responses]

    def stats(self):
        return {"calls": self.calls}

    def close(self):
        pass


def test_win_rate_counts_ties_half_and_leaves_out_what_cannot_be_scored() -> None:
    prompts = [{"id": f"p{i}", "bucket": "help" if i < 4 else "safe", "prompt": [{"role": "user", "content": str(i)}]}
               for i in range(6)]

    def answers(texts):
        return [{"id": p["id"], "bucket": p["bucket"], "answer": t, "finish_reason": "stop" if t else None,
                 "tokens": 1} for p, t in zip(prompts, texts, strict=True)]

    reference = answers(["aa", "aa", "aa", "aa", "aa", "aa"])
    model = answers(["aaa", "aa", "a", "aaaa", None, "what?"])  # win, tie, loss, win, unanswered, unscored
    results, records = compare(LengthScorer(), prompts, {"sft": reference, "dpo": model}, "sft")
    dpo = results["dpo"]
    assert (dpo["wins"], dpo["ties"], dpo["losses"], dpo["unscored"]) == (2, 1, 1, 2)
    assert dpo["rate"] == pytest.approx((2 + 0.5) / 4)
    assert dpo["unanswered"] == 1 and dpo["mean_score"] == pytest.approx((3 + 2 + 1 + 4) / 4)
    assert dpo["buckets"]["help"]["rate"] == pytest.approx(2.5 / 4) and dpo["buckets"]["safe"]["compared"] == 0
    assert results["sft"]["rate"] == 0.5 and results["sft"]["ties"] == 6  # the reference against itself
    outcomes = [r["outcome"] for r in records if r["model"] == "dpo"]
    assert outcomes == ["win", "tie", "loss", "win", "unscored", "unscored"]
    assert all(r["reference_score"] == 2.0 for r in records)

    # a tolerance turns close scores into ties
    tolerant, _ = compare(LengthScorer(), prompts, {"sft": reference, "dpo": model}, "sft", tie_tolerance=1.0)
    assert (tolerant["dpo"]["wins"], tolerant["dpo"]["ties"], tolerant["dpo"]["losses"]) == (1, 3, 0)


def test_pass_at_k_on_known_counts() -> None:
    from math import comb

    # one bucket, four prompts with 0, 1, 3 and 5 of 5 samples passing, and their greedy answers
    counts = [0, 1, 3, 5]
    samples = [{"mode": "pass@k", "bucket": "b", "index": i, "passed": j < c, "reasons": []}
               for i, c in enumerate(counts) for j in range(5)]
    samples += [{"mode": "accuracy", "bucket": "b", "index": i, "passed": i >= 2, "reasons": [] if i >= 2 else
                 ["wrong_answer:12"]} for i in range(4)]
    m = set_metrics(samples, [1, 2, 5])["buckets"]["b"]
    for k in (1, 2, 5):
        expected = sum(1 - comb(5 - c, k) / comb(5, k) for c in counts) / 4
        assert m["pass@k"][f"pass@{k}"] == pytest.approx(expected, abs=1e-6)
    assert m["pass@k"]["pass@1"] == pytest.approx((0 + 0.2 + 0.6 + 1) / 4)
    assert m["pass@k"]["pass@5"] == 0.75 and m["pass@k"]["samples"] == 20 and m["pass@k"]["passed"] == 9
    assert m["accuracy"] == 0.5 and m["failures"] == {"wrong_answer": 2} and m["prompts"] == 4


@pytest.fixture(scope="module")
def model_variants(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("variants")

    def variant(name: str, edit) -> Path:
        folder = root / name
        shutil.copytree(tiny_model_dir, folder)
        edit(folder)
        return folder

    def config_edit(**changes):
        def edit(folder: Path) -> None:
            config = json.loads((folder / "config.json").read_text())
            (folder / "config.json").write_text(json.dumps({**config, **changes}))
        return edit

    def template_edit(folder: Path) -> None:
        config = json.loads((folder / "tokenizer_config.json").read_text())
        config["model_max_length"] = 1024
        (folder / "tokenizer_config.json").write_text(json.dumps(config))

    return {
        "copy": variant("copy", lambda folder: None),
        "dtype": variant("dtype", config_edit(dtype="bfloat16", transformers_version="0.0",
                                              posttrain_calibration={"method": "temperature", "temperature": 2.0})),
        "layers": variant("layers", config_edit(num_hidden_layers=1)),
        "tokenizer": variant("tokenizer", template_edit),
    }


def test_which_models_can_share_running_workers(tiny_model_dir: Path, model_variants: dict[str, Path]) -> None:
    base = architecture_key(tiny_model_dir)
    assert architecture_key(model_variants["copy"]) == base
    # stored dtype and bookkeeping keys (a calibrated model's settings among them) do not matter
    assert architecture_key(model_variants["dtype"]) == base
    assert architecture_key(model_variants["layers"]) != base
    assert architecture_key(model_variants["tokenizer"]) != base  # the engine keeps its own tokenizer
    models = {"a": tiny_model_dir, "b": model_variants["layers"], "c": model_variants["copy"],
              "d": model_variants["tokenizer"], "e": model_variants["dtype"]}
    assert load_order(models) == ["a", "c", "e", "b", "d"]
    assert load_order(models, first=model_variants["layers"]) == ["b", "a", "c", "e", "d"]


def test_markdown_table() -> None:
    models = {
        "sft": {"sets": {"s": {"all": {"prompts": 2, "accuracy": 0.5, "pass@k": {"pass@1": 0.25, "pass@2": 0.5}},
                               "buckets": {"x": {"accuracy": 0.5}}}},
                "chat": {"rate": 0.5, "mean_score": None, "buckets": {"h": {"rate": 0.5}}}},
        "a|b": {"sets": {"s": {"all": {"prompts": 2, "accuracy": 1.0, "pass@k": {"pass@1": 1.0, "pass@2": 1.0}},
                               "buckets": {"x": {"accuracy": 1.0}}}},
                "chat": {"rate": 0.75, "mean_score": 1.5, "buckets": {"h": {"rate": 0.75}}}},
    }
    columns, rows = comparison(models, [1, 2])
    assert columns == ["model", "s acc", "s pass@1", "s pass@2", "win rate", "reward"]
    assert markdown(columns, rows).splitlines() == [
        "| model | s acc | s pass@1 | s pass@2 | win rate | reward |",
        "|:---|---:|---:|---:|---:|---:|",
        "| sft | 0.500 | 0.250 | 0.500 | 0.500 |  |",
        "| a\\|b | 1.000 | 1.000 | 1.000 | 0.750 | 1.500 |",
    ]
    # the terminal's version is on its side: one row per metric, one column per model
    from rich.console import Console

    from posttrain.evaluation.table import rich_table

    console = Console(width=60, record=True)
    console.print(rich_table(columns, rows, "eval"))
    lines = [line for line in console.export_text().splitlines() if "│" in line]
    assert [line.split("│")[1].strip() for line in lines] == ["s acc", "s pass@1", "s pass@2", "win rate", "reward"]
    assert [c.strip() for c in lines[3].split("│")[2:4]] == ["0.500", "0.750"]


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "eval.yaml"
    path.write_text(text)
    return path


@pytest.mark.parametrize(("text", "message"), [
    ("models: {sft: m}\noutput_dir: o\nsets: {h: {recipe: r.yaml}}\nbogus: 1\n", r"bogus: unknown key; expected one"),
    ("models: {}\noutput_dir: o\nsets: {h: {recipe: r.yaml}}\n", r"models: give at least one model"),
    ("models: {'my model': m}\noutput_dir: o\nsets: {h: {recipe: r.yaml}}\n", r"models: .*names must be"),
    ("models: {sft: m}\noutput_dir: o\n", r"nothing to evaluate"),
    ("models: {sft: m}\noutput_dir: o\nsets: {h: {recipe: r.yaml, dataset: d}}\n", r"sets.h: .*exactly one of"),
    ("models: {sft: m}\noutput_dir: o\nsets: {h: {recipe: r.yaml}}\nsampling: {n: 4}\n", r"sampling.n: accuracy"),
    ("models: {sft: m}\noutput_dir: o\nsets: {h: {recipe: r.yaml}}\npass_at_k: {n: 4, k: [8]}\n",
     r"pass_at_k: .*between 1 and n=4"),
    ("models: {sft: m}\noutput_dir: o\nsets: {h: {recipe: r.yaml}}\npass_at_k: {n: 4, sampling: {n: 2}}\n",
     r"pass_at_k: .*sampling.n"),
    ("models: {sft: m}\noutput_dir: o\nsets: {h: {recipe: r.yaml}}\npass_at_k: {n: 1}\n", r"pass_at_k.n: "),
    ("models: {sft: m}\noutput_dir: o\nchat: {prompts: p.yaml}\n", r"chat.scorer: required key is missing"),
    ("models: {sft: m}\noutput_dir: o\nchat: {prompts: p.yaml, scorer: {kind: reward_model}}\n",
     r"chat.scorer: .*reward_model .* is not set"),
    ("models: {sft: m}\noutput_dir: o\nchat: {prompts: p.yaml, scorer: {reward_model: rm}, held_out_fraction: 1}\n",
     r"chat.held_out_fraction: "),
])
def test_bad_configs_name_the_file_and_key(tmp_path: Path, text: str, message: str) -> None:
    path = _write(tmp_path, text)
    with pytest.raises(UserError, match=rf"{path}: .*{message}"):
        load_config(EvalConfig, path, [])


def _run(tmp_path: Path, tiny: Path, *overrides: str) -> dict:
    cfg = load_config(EvalConfig, None, [f"models={{sft: {tiny}}}", f"output_dir={tmp_path / 'out'}",
                                         f"sets={{heldout: {{recipe: {HELDOUT}, limit: 4}}}}", *overrides])
    return run_eval(cfg, source="eval.yaml").manifest


def test_bad_inputs_fail_before_any_worker_starts(tmp_path: Path, tiny_model_dir: Path,
                                                  built_dataset_writer) -> None:
    with pytest.raises(UserError, match=r"eval.yaml: models.logic: model folder .*nowhere.* not found"):
        _run(tmp_path, tiny_model_dir, f"models={{sft: {tiny_model_dir}, logic: {tmp_path / 'nowhere'}}}")
    chat_rows = built_dataset_writer(tmp_path / "chat_data", "chat",
                                     [{"messages": [{"role": "user", "content": "hi"}], "tools": ""}])
    with pytest.raises(UserError, match=r"sets.heldout.dataset .*chat_data.*: holds a 'chat' dataset"):
        _run(tmp_path, tiny_model_dir, f"sets={{heldout: {{dataset: {chat_rows}}}}}")
    with pytest.raises(UserError, match=r"sampling.buckets: overrides for unknown bucket\(s\) maths; buckets in the "
                                        r"data: math, tool_calling"):
        _run(tmp_path, tiny_model_dir, "sampling.buckets={maths: {max_tokens: 8}}")
    with pytest.raises(UserError, match=r"pass_at_k.sampling \(bucket math\): .*temperature 0 \(greedy\)"):
        _run(tmp_path, tiny_model_dir, "pass_at_k={n: 4, sampling: {temperature: 0}}")
    with pytest.raises(UserError, match=r"sampling.seed: per-prompt sampling seeds derive from the top-level `seed`"):
        _run(tmp_path, tiny_model_dir, "sampling.seed=3")
    chat = f"{{prompts: {PREFERENCE_TINY}, reference: base, scorer: {{reward_model: {tiny_model_dir}}}}}"
    with pytest.raises(UserError, match=r"eval.yaml: chat.reference \(not one of models: sft; as a folder\): model "
                                        r"folder 'base' not found"):
        _run(tmp_path, tiny_model_dir, f"chat={chat}")
    chat = f"{{prompts: {PREFERENCE_TINY}, scorer: {{reward_model: {tiny_model_dir}}}}}"
    with pytest.raises(UserError, match=r"eval.yaml: chat.scorer.reward_model: .* is not a reward model"):
        _run(tmp_path, tiny_model_dir, f"chat={chat}")
    chat = f"{{prompts: {tmp_path / 'missing.yaml'}, scorer: {{reward_model: {tiny_model_dir}}}}}"
    with pytest.raises(UserError, match=r"eval.yaml: chat.prompts: recipe file not found"):
        _run(tmp_path, tiny_model_dir, f"chat={chat}")
    chat = f"{{prompts: {PREFERENCE_TINY}, held_out_fraction: 0.0001, scorer: {{reward_model: {tiny_model_dir}}}}}"
    with pytest.raises(UserError, match=r"eval.yaml: chat.prompts: no prompts left to compare \(\d+ read, 0 held out"):
        _run(tmp_path, tiny_model_dir, f"chat={chat}")
    assert not (tmp_path / "out" / "parts").exists() and not (tmp_path / "out" / "manifest.json").exists()


def test_shipped_config_is_valid() -> None:
    cfg = load_config(EvalConfig, ROOT / "configs/eval.yaml", [])
    assert list(cfg.models) == ["sft", "chat", "logic", "merged"] and cfg.chat is not None
    assert cfg.chat.reference == "sft" and cfg.pass_at_k is not None and cfg.pass_at_k.k == [1, 2, 4]
    assert cfg.sampling.resolve("tool_calling").max_tokens == 128 and cfg.sampling.resolve("math").greedy


def test_cli_dry_run_and_exit_code(tmp_path: Path, tiny_model_dir: Path, monkeypatch: pytest.MonkeyPatch,
                                   capsys: pytest.CaptureFixture[str]) -> None:
    import posttrain.cli  # noqa: F401  registers the command
    from posttrain.cli import main

    path = _write(tmp_path, f"models: {{sft: {tiny_model_dir}}}\noutput_dir: {tmp_path / 'o'}\n"
                            f"sets: {{heldout: {{recipe: {HELDOUT}}}}}\n")
    monkeypatch.setattr(sys, "argv", ["posttrain", "eval", "--config", str(path), "pass_at_k.n=8", "--dry-run"])
    with pytest.raises(SystemExit) as exit_info:
        main()
    assert exit_info.value.code in (0, None)
    shown = capsys.readouterr().out
    assert "pass_at_k:" in shown and "n: 8" in shown and "- 1\n" in shown and "- 8\n" in shown
    assert not (tmp_path / "o").exists()

    monkeypatch.setattr(sys, "argv", ["posttrain", "eval", "--config", str(path), "pass_at_k={n: 2, k: [3]}"])
    with pytest.raises(SystemExit) as exit_info:
        main()
    assert exit_info.value.code == 2
    err = " ".join(capsys.readouterr().err.split())  # rich wraps long lines
    assert "pass_at_k" in err and "between 1 and n=2" in err and "Traceback" not in err
