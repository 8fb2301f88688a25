"""vLLM behind the engine interface, with in-place weight updates.

Weights go in through vLLM's own in-place reload (the worker's ``reload_weights``: checkpoint-format names,
layer-wise post-processing, partial updates allowed), called with ``LLM.collective_rpc`` so tensor-parallel workers each
load their shard; the prefix cache is reset afterwards so no KV block computed with the old weights is reused.

The engine core runs in the calling process (``VLLM_ENABLE_V1_MULTIPROCESSING=0``), so new weights are handed to the
model as tensors (vLLM's IPC does not carry tensors inside utility calls), and start-up is much shorter on CPU (one
process instead of three). vLLM then changes process-wide state: it caches its environment variables, freezes the GC
heap and makes ``torch.set_num_threads`` a no-op. So build engines in processes that do nothing else: a rollout
worker (each is its own Ray actor process) or a script.

On CPU the KV cache size must be given (vLLM's default reads one NUMA node's memory and fails here), eager mode is the
default (compiling costs ~80 s for little gain), and torch's thread count is set before vLLM pins it.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from posttrain.rollout.engines import (
    Engine,
    NamedTensors,
    Sample,
    check_prompts,
    iter_checkpoint_tensors,
    named_items,
    per_prompt,
    weight_files,
)
from posttrain.rollout.sampling import SamplingParams

GiB = 1 << 30


def _prepare_process(num_threads: int | None) -> None:
    """Settings vLLM reads at start-up; they must be in place before the ``LLM`` is built."""
    os.environ["VLLM_ENABLE_V1_MULTIPROCESSING"] = "0"
    if num_threads is not None:
        import torch

        # vLLM drops torch to 1 thread unless OMP_NUM_THREADS is set, then forbids set_num_threads: set both first.
        os.environ["OMP_NUM_THREADS"] = str(num_threads)
        torch.set_num_threads(num_threads)


class VLLMEngine(Engine):
    """A vLLM ``LLM`` (V1 engine, in-process) generating from token ids.

    ``kv_cache_gib`` sizes the KV cache on CPU (ignored on GPUs, where ``gpu_memory_utilization`` applies);
    ``enforce_eager`` defaults to True on CPU; ``num_threads`` sets the CPU threads; extra keyword arguments go to
    ``vllm.LLM`` unchanged.
    """

    def __init__(self, model_path: str | Path, *, dtype: str = "auto", max_model_len: int | None = None,
                 tensor_parallel_size: int = 1, gpu_memory_utilization: float = 0.9, kv_cache_gib: float = 1.0,
                 enforce_eager: bool | None = None, num_threads: int | None = None, seed: int = 0,
                 **llm_kwargs: Any) -> None:
        weight_files(model_path)  # a clear UserError before vLLM's long start-up
        _prepare_process(num_threads)
        from vllm import LLM
        from vllm.platforms import current_platform

        on_cpu = current_platform.is_cpu()
        kwargs: dict[str, Any] = dict(
            model=str(model_path), dtype=dtype, max_model_len=max_model_len, seed=seed,
            tensor_parallel_size=tensor_parallel_size, gpu_memory_utilization=gpu_memory_utilization,
            enforce_eager=on_cpu if enforce_eager is None else enforce_eager,
            # the log-probs of the distribution each token was drawn from (temperature, top-k/p applied), like TRL
            logprobs_mode="processed_logprobs", disable_log_stats=True,
        )
        if on_cpu:
            kwargs["kv_cache_memory_bytes"] = int(kv_cache_gib * GiB)
        kwargs.update(llm_kwargs)
        self.llm = LLM(**kwargs)
        self.lora_request: Any = None  # the adapter generation runs with (update_adapter), if any
        self._adapter_dir: Any = None
        self.tokenizer = self.llm.get_tokenizer()
        self.max_model_len = self.llm.llm_engine.model_config.max_model_len
        self.tied_embeddings = bool(getattr(self.llm.llm_engine.model_config.hf_config, "tie_word_embeddings", False))

    def _vllm_params(self, params: SamplingParams) -> Any:
        import vllm

        return vllm.SamplingParams(
            n=params.n, temperature=params.temperature, top_p=params.top_p, top_k=params.top_k,
            max_tokens=params.max_tokens, stop=list(params.stop) or None, include_stop_str_in_output=True,
            seed=params.seed, logprobs=0 if params.logprobs else None,
        )

    def generate(self, prompts: Sequence[Sequence[int]],
                 sampling: SamplingParams | Sequence[SamplingParams]) -> list[list[Sample]]:
        params = per_prompt(sampling, len(prompts))
        if not prompts:
            return []
        check_prompts(prompts, self.max_model_len)
        inputs = [{"prompt_token_ids": list(ids)} for ids in prompts]
        outputs = self.llm.generate(inputs, [self._vllm_params(p) for p in params], use_tqdm=False,
                                    lora_request=self.lora_request)
        results = []
        for out, p in zip(outputs, params, strict=True):
            samples = []
            for c in sorted(out.outputs, key=lambda c: c.index):
                ids = list(c.token_ids)
                logprobs = [lp[t].logprob for lp, t in zip(c.logprobs, ids, strict=True)] if p.logprobs else None
                samples.append(Sample(token_ids=ids, logprobs=logprobs, text=c.text,
                                      finish_reason="length" if c.finish_reason == "length" else "stop"))
            results.append(samples)
        return results

    def update_weights_from_path(self, path: str | Path) -> None:
        self.update_weights(list(iter_checkpoint_tensors(path)))

    def update_weights(self, named_tensors: NamedTensors) -> None:
        """New weights replace the model, so an adapter loaded before is dropped."""
        if self.lora_request is not None:
            self.llm.llm_engine.remove_lora(self.lora_request.lora_int_id)
            self.lora_request = None
        items = [(name, tensor.cpu()) for name, tensor in named_items(named_tensors)]
        self.llm.collective_rpc("reload_weights", kwargs={"weights_iterator": self._with_tied_head(items)})
        self.llm.reset_prefix_cache()

    def update_adapter(self, named_tensors: NamedTensors, config: dict[str, Any]) -> None:
        """vLLM's LoRA support (the engine must be built with ``enable_lora=True`` and ``max_lora_rank`` >= r): the
        adapter is written as a peft folder and loaded under a new id, the previous one removed; generation then
        runs with it."""
        import json
        import tempfile

        from safetensors.torch import save_file
        from vllm.lora.request import LoRARequest

        if self.llm.llm_engine.vllm_config.lora_config is None:
            raise ValueError("update_adapter: this vLLM engine was built without enable_lora=True")
        if self._adapter_dir is None:
            self._adapter_dir = tempfile.TemporaryDirectory(prefix="posttrain-adapter-")
        previous = self.lora_request
        version = (previous.lora_int_id + 1) if previous is not None else 1
        folder = Path(self._adapter_dir.name) / f"v{version}"
        folder.mkdir()
        save_file({name: t.contiguous().cpu() for name, t in named_items(named_tensors)},
                  str(folder / "adapter_model.safetensors"))
        (folder / "adapter_config.json").write_text(json.dumps(config), encoding="utf-8")
        self.lora_request = LoRARequest(f"policy-v{version}", version, str(folder))
        self.llm.llm_engine.add_lora(self.lora_request)
        if previous is not None:
            self.llm.llm_engine.remove_lora(previous.lora_int_id)
        self.llm.reset_prefix_cache()

    def _with_tied_head(self, items: list[tuple[str, Any]]) -> list[tuple[str, Any]]:
        """With tied embeddings, also send the embedding as ``lm_head.weight``. vLLM's layer-wise reload only
        reprocesses layers that receive weights, and on CPU the LM head keeps a packed copy of its weight for the
        GEMM kernel: without this, a new embedding (which tied checkpoints store only once) leaves a stale head."""
        names = {name for name, _ in items}
        if not self.tied_embeddings or "lm_head.weight" in names:
            return items
        embedding = [t for name, t in items if name.endswith("embed_tokens.weight")]
        return items + [("lm_head.weight", embedding[0])] if embedding else items

    def close(self) -> None:
        llm = getattr(self, "llm", None)
        if llm is not None:
            llm.llm_engine.engine_core.shutdown()
            del self.llm
