"""The parts of `posttrain sample` that need no model: pass@k, selection policies, shards, the overlap of the two
stages, task loading and batching, and config errors."""

from __future__ import annotations

import json
import threading
import time
from itertools import combinations
from math import comb
from pathlib import Path

import pytest

from posttrain.config import load_config
from posttrain.errors import UserError
from posttrain.rejection.metrics import BucketStats, pass_at_k, summarize
from posttrain.rejection.overlap import run_overlapped
from posttrain.rejection.selection import SelectionConfig, select
from posttrain.rejection.shards import ShardStore
from posttrain.tasks import TasksConfig, load_tasks, make_batches, row_seed

REPO = Path(__file__).resolve().parent.parent


# -- pass@k ---------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("n,c,k", [(1, 0, 1), (1, 1, 1), (4, 1, 1), (4, 1, 2), (5, 2, 3), (10, 3, 5), (6, 0, 6),
                                   (6, 6, 1), (8, 1, 8)])
def test_pass_at_k_equals_the_fraction_of_k_subsets_with_a_pass(n: int, c: int, k: int) -> None:
    outcomes = [True] * c + [False] * (n - c)
    subsets = list(combinations(range(n), k))
    exact = sum(any(outcomes[i] for i in s) for s in subsets) / len(subsets)
    assert pass_at_k(n, c, k) == pytest.approx(exact, abs=1e-12)
    assert pass_at_k(n, c, k) == pytest.approx(1 - comb(n - c, k) / comb(n, k), abs=1e-12)


def test_pass_at_1_is_the_pass_rate_and_large_n_stays_exact() -> None:
    assert pass_at_k(10, 3, 1) == pytest.approx(0.3)
    assert pass_at_k(2000, 7, 100) == pytest.approx(1 - comb(1993, 100) / comb(2000, 100), rel=1e-9)


@pytest.mark.parametrize("n,c,k", [(4, 5, 1), (4, -1, 1), (4, 2, 0), (4, 2, 5)])
def test_pass_at_k_rejects_impossible_counts(n: int, c: int, k: int) -> None:
    with pytest.raises(ValueError):
        pass_at_k(n, c, k)


def _sample(i: int, passed: bool, text: str = "", score: float = 1.0, tokens: int = 10, truncated: bool = False,
            reasons: list[str] | None = None) -> dict:
    return {"sample_index": i, "passed": passed, "score": score, "model_tokens": tokens, "total_tokens": tokens + 20,
            "truncated": truncated, "reasons": reasons if reasons is not None else ([] if passed else ["wrong_answer"]),
            "prompt_messages": 1,
            "messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": text or f"answer {i}"}]}


def test_bucket_report_counts_passes_kept_rejections_and_pass_at_k() -> None:
    a, b = BucketStats(), BucketStats()
    samples = [_sample(0, True, "x"), _sample(1, True, "x"), _sample(2, False, reasons=["missing_fact:12.50"]),
               _sample(3, False, reasons=["missing_fact:7", "state_mismatch"])]
    kept, dropped = select(samples, SelectionConfig())
    a.add_prompt(samples, set(kept), dropped)
    a.add_prompt([_sample(0, False), _sample(1, False), _sample(2, False), _sample(3, True, truncated=True)],
                 set(), {3: "truncated"})
    b.add_prompt([_sample(0, False, reasons=[])], set(), {})
    report = summarize({"math": a, "tool": b})
    m = report["buckets"]["math"]
    assert m["prompts"] == 2 and m["samples"] == 8 and m["passed"] == 3 and m["kept"] == 1
    assert m["pass@1"] == pytest.approx((0.5 + 0.25) / 2)
    assert m["pass@4"] == pytest.approx(1.0)
    assert m["rejection_reasons"] == {"missing_fact": 2, "state_mismatch": 1, "wrong_answer": 3}
    assert m["not_selected"] == {"duplicate": 1, "truncated": 1}
    assert m["kept_tokens"] == 10 and m["generated_tokens"] == 80
    assert report["buckets"]["tool"]["rejection_reasons"] == {"unknown": 1}
    assert report["buckets"]["tool"]["pass@1"] == 0.0
    total = report["total"]
    assert total["prompts"] == 3 and total["samples"] == 9 and total["samples_per_prompt"] == "1/4"
    assert total["pass@1"] == pytest.approx(0.75 / 3)


# -- selection policies ---------------------------------------------------------------------------------------------

def _prompt_samples() -> list[dict]:
    return [
        _sample(0, True, "same", score=0.5, tokens=30),
        _sample(1, False, "wrong", score=0.9, tokens=5),
        _sample(2, True, "same", score=0.5, tokens=30),  # repeat of sample 0
        _sample(3, True, "long and best", score=1.0, tokens=50),
        _sample(4, True, "short", score=0.7, tokens=8),
        _sample(5, True, "cut off", score=1.0, tokens=4, truncated=True),
        _sample(6, True, "also best", score=1.0, tokens=20),
    ]


def test_all_distinct_keeps_every_distinct_untruncated_pass() -> None:
    kept, dropped = select(_prompt_samples(), SelectionConfig(policy="all_distinct"))
    assert kept == [0, 3, 4, 6]
    assert dropped == {2: "duplicate", 5: "truncated"}
    kept, dropped = select(_prompt_samples(), SelectionConfig(policy="all_distinct", reject_truncated=False, k=2))
    assert kept == [0, 3]
    assert dropped == {2: "duplicate", 4: "beyond_k", 5: "beyond_k", 6: "beyond_k"}


def test_best_k_takes_the_highest_scores_ties_by_sample_order() -> None:
    kept, dropped = select(_prompt_samples(), SelectionConfig(policy="best_k", k=2))
    assert kept == [3, 6]
    assert dropped == {0: "beyond_k", 2: "duplicate", 4: "beyond_k", 5: "truncated"}
    assert select(_prompt_samples(), SelectionConfig(policy="best_k"))[0] == [3]  # k defaults to 1


def test_shortest_takes_the_fewest_model_tokens() -> None:
    kept, _ = select(_prompt_samples(), SelectionConfig(policy="shortest", k=2))
    assert kept == [4, 6]
    kept, _ = select(_prompt_samples(), SelectionConfig(policy="shortest", k=1, reject_truncated=False))
    assert kept == [5]


def test_duplicates_compare_everything_after_the_prompt() -> None:
    a, b = _sample(0, True, "same"), _sample(1, True, "same")
    b["messages"].append({"role": "tool", "content": "different observation"})
    assert select([a, b], SelectionConfig())[0] == [0, 1]
    assert select([_sample(0, False), _sample(1, False)], SelectionConfig(policy="best_k", k=3)) == ([], {})


def test_selection_config_errors_name_the_key(tmp_path: Path) -> None:
    from posttrain.stages.sample import SampleConfig

    with pytest.raises(UserError, match=r"selection\.policy"):
        load_config(SampleConfig, None, ["model=m", "output_dir=o", "tasks.recipe=r.yaml", "selection.policy=longest"])
    with pytest.raises(UserError, match=r"selection\.k"):
        load_config(SampleConfig, None, ["model=m", "output_dir=o", "tasks.recipe=r.yaml", "selection.k=0"])


# -- shards ---------------------------------------------------------------------------------------------------------

def test_shards_are_atomic_and_resume_only_with_the_same_fingerprint(tmp_path: Path) -> None:
    store = ShardStore(tmp_path / "shards", "fp1")
    store.write(0, [{"index": 0, "samples": []}, {"index": 1, "samples": []}])
    (tmp_path / "shards" / "batch_00001.jsonl.tmp").write_text('{"index": 2, "sam')  # a write cut short by a kill
    again = ShardStore(tmp_path / "shards", "fp1")
    assert again.done(0) and not again.done(1)
    assert not (tmp_path / "shards" / "batch_00001.jsonl.tmp").exists()
    assert [r["index"] for r in again.read(0)] == [0, 1]
    with pytest.raises(UserError, match="different model, tasks, sampling"):
        ShardStore(tmp_path / "shards", "fp2")
    fresh = ShardStore(tmp_path / "shards", "fp2", resume=False)
    assert not fresh.done(0)
    assert json.loads((tmp_path / "shards" / "run.json").read_text())["fingerprint"] == "fp2"


def test_a_damaged_shard_is_named(tmp_path: Path) -> None:
    store = ShardStore(tmp_path, "fp")
    store.path(3).write_text('{"index": 0}\nnot json\n')
    with pytest.raises(UserError, match=r"batch_00003\.jsonl:2: not valid JSON"):
        list(store.read(3))


# -- overlap --------------------------------------------------------------------------------------------------------

def test_generation_and_finishing_overlap_with_bounded_memory() -> None:
    lock = threading.Lock()
    alive: set[int] = set()  # batches generated and not yet finished
    peak = [0]
    order: list[tuple[str, int]] = []

    def generate(i: int) -> int:
        time.sleep(0.05)
        with lock:
            alive.add(i)
            peak[0] = max(peak[0], len(alive))
            order.append(("gen", i))
        return i * 10

    def finish(i: int, result: int) -> None:
        assert result == i * 10
        time.sleep(0.05)
        with lock:
            alive.discard(i)
            order.append(("fin", i))

    times = run_overlapped(range(8), generate, finish, depth=1)
    assert [i for kind, i in order if kind == "fin"] == list(range(8))
    assert peak[0] <= 3  # one waiting, one being finished, one just generated
    assert times.batches == 8
    # serial would take 8 * (0.05 + 0.05) = 0.8 s; overlapped about 9 * 0.05
    assert times.wall_s < 0.7 and times.generate_s >= 0.4 and times.finish_s >= 0.4


def test_a_finishing_error_stops_generation_and_reaches_the_caller() -> None:
    generated: list[int] = []

    def finish(i: int, _result: None) -> None:
        if i == 1:
            raise RuntimeError("verifier exploded")

    def generate(i: int) -> None:
        generated.append(i)
        time.sleep(0.02)

    with pytest.raises(RuntimeError, match="verifier exploded"):
        run_overlapped(range(50), generate, finish)
    assert len(generated) < 10


def test_a_generation_error_still_finishes_what_was_generated() -> None:
    finished: list[int] = []

    def generate(i: int) -> int:
        if i == 3:
            raise RuntimeError("workers gone")
        return i

    with pytest.raises(RuntimeError, match="workers gone"):
        run_overlapped(range(6), generate, lambda i, _r: finished.append(i))
    assert finished == [0, 1, 2]


# -- tasks ----------------------------------------------------------------------------------------------------------

def test_shipped_task_recipes_load_and_batch_by_env(tmp_path: Path) -> None:
    rows, inputs = load_tasks(TasksConfig(recipe=str(REPO / "data_recipes/rs_tasks.yaml")), tmp_path / "train")
    held, _ = load_tasks(TasksConfig(recipe=str(REPO / "data_recipes/rs_tasks_heldout.yaml")), tmp_path / "held")
    assert len(rows) == len(held) == 64
    assert {r.env for r in rows} == {"math", "tool_calling"} and {r.bucket for r in rows} == {"math", "tool_calling"}
    assert not {r.task["id"] for r in rows} & {r.task["id"] for r in held}  # held-out never seen in training
    assert "tasks:data.parquet" in inputs and "tasks/math_train.jsonl" in inputs
    batches = make_batches(rows, 10)
    assert [len(b.rows) for b in batches] == [10, 10, 10, 2, 10, 10, 10, 2]
    assert all(len({r.env for r in b.rows}) == 1 for b in batches)
    assert sorted(r.index for b in batches for r in b.rows) == list(range(64))
    from_folder, folder_inputs = load_tasks(TasksConfig(dataset=str(tmp_path / "train")), tmp_path / "unused")
    assert [(r.id, r.env, r.task) for r in from_folder] == [(r.id, r.env, r.task) for r in rows]
    assert folder_inputs == inputs and not (tmp_path / "unused").exists()
    seeds = [row_seed(0, r) for r in rows]
    assert len(set(seeds)) == 64 and seeds == [row_seed(0, r) for r in rows] and seeds != [row_seed(1, r) for r in rows]


def _task_recipe(tmp_path: Path, records: list[dict], kind: str = "task") -> Path:
    (tmp_path / "t.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    recipe = tmp_path / "r.yaml"
    recipe.write_text(f"kind: {kind}\nbuckets:\n  b:\n    sources: [{{path: t.jsonl}}]\n")
    return recipe


def test_task_rows_with_unknown_envs_and_wrong_kinds_are_user_errors(tmp_path: Path) -> None:
    good = {"id": "a", "env": "math", "messages": [{"role": "user", "content": "1+1?"}], "tools": [], "answer": "2"}
    bad = {**good, "id": "b", "env": "no_such_env", "messages": [{"role": "user", "content": "2+2?"}]}
    recipe = _task_recipe(tmp_path, [good, bad])
    with pytest.raises(UserError, match=r"row \d \(id \w+, task b\): environment 'no_such_env': not found"):
        load_tasks(TasksConfig(recipe=str(recipe)), tmp_path / "built")
    recipe = _task_recipe(tmp_path, [good, {**bad, "env": "math"}])
    rows, _ = load_tasks(TasksConfig(recipe=str(recipe), limit=1), tmp_path / "built")
    assert len(rows) == 1 and rows[0].task["id"] in ("a", "b")

    chat = tmp_path / "chat"
    chat.mkdir()
    chat_recipe = _task_recipe(chat, [{"messages": [{"role": "user", "content": "hi"},
                                                    {"role": "assistant", "content": "hello"}]}], kind="chat")
    from posttrain.data import build_dataset

    build_dataset(chat_recipe, chat / "built")
    with pytest.raises(UserError, match=r"tasks\.dataset .*holds a 'chat' dataset"):
        load_tasks(TasksConfig(dataset=str(chat / "built")), tmp_path / "unused")
    with pytest.raises(UserError, match="folder not found"):
        load_tasks(TasksConfig(dataset=str(tmp_path / "missing")), tmp_path / "unused")


def test_sample_config_errors_are_user_errors(tmp_path: Path) -> None:
    from posttrain.stages.sample import SampleConfig

    with pytest.raises(UserError, match="set exactly one of recipe"):
        load_config(SampleConfig, None, ["model=m", "output_dir=o", "tasks.recipe=a.yaml", "tasks.dataset=d"])
    with pytest.raises(UserError, match=r"tasks: required key is missing"):
        load_config(SampleConfig, None, ["model=m", "output_dir=o"])
    with pytest.raises(UserError, match=r"batch_size"):
        load_config(SampleConfig, None, ["model=m", "output_dir=o", "tasks.recipe=a.yaml", "batch_size=0"])
    with pytest.raises(UserError, match=r"bogus: unknown key"):
        load_config(SampleConfig, None, ["model=m", "output_dir=o", "tasks.recipe=a.yaml", "bogus=1"])
    cfg = load_config(SampleConfig, None, ["model=m", "output_dir=o", "tasks.recipe=a.yaml", "sampling.seed=3"])
    with pytest.raises(UserError, match=r"sampling\.seed: per-prompt sampling seeds derive from the top-level `seed`"):
        cfg.sampling.per_bucket(["math"])
    cfg = load_config(SampleConfig, None, ["model=m", "output_dir=o", "tasks.recipe=a.yaml",
                                           "sampling.buckets.code.n=2"])
    with pytest.raises(UserError, match=r"sampling\.buckets: overrides for unknown bucket\(s\) code"):
        cfg.sampling.per_bucket(["math"])
