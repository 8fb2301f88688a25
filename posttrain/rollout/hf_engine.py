"""transformers ``generate`` behind the engine interface: the fallback when vLLM is not installed or does not support
a model, and the reference the vLLM engine is checked against.

Same semantics as the vLLM engine: the same sampling warpers in the same order (temperature, top-k, top-p), the
log-prob of each sampled token under the distribution it was drawn from, end-of-sequence tokens kept in ``token_ids``,
stop strings kept at the end of ``text``, and samples capped at the context length with ``"length"``.
Prompts with equal sampling settings are batched (left-padded); a seed seeds torch's generator once per batch, so
seeded runs repeat for the same batches but do not reproduce vLLM's per-request streams.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from posttrain.rollout.engines import (
    Engine,
    NamedTensors,
    Sample,
    adapter_module_name,
    check_prompts,
    iter_checkpoint_tensors,
    named_items,
    per_prompt,
    weight_files,
)
from posttrain.rollout.sampling import SamplingParams

ADAPTER = "policy"  # the adapter's name inside the engine's model


def _hits_stop(tokenizer: Any, generated: list[int], stop: list[str]) -> bool:
    """Whether the text of the last few generated tokens (enough to hold the longest stop string) contains a stop
    string. Checked after every token, so it fires on the token that completes the string."""
    window = max(len(s) for s in stop) + 2
    tail = tokenizer.decode(generated[-window:], skip_special_tokens=True)
    return any(s in tail for s in stop)


class _StopOnStrings:
    """Per-row stopping criterion for ``generate``; ``HFEngine._finish`` cuts with the same rule, so they agree."""

    def __init__(self, tokenizer: Any, stop: list[str], prompt_len: int) -> None:
        self.tokenizer, self.stop, self.prompt_len = tokenizer, stop, prompt_len

    def __call__(self, input_ids: torch.Tensor, scores: Any, **kwargs: Any) -> torch.Tensor:
        done = [_hits_stop(self.tokenizer, row.tolist(), self.stop) for row in input_ids[:, self.prompt_len:]]
        return torch.tensor(done, dtype=torch.bool, device=input_ids.device)


class HFEngine(Engine):
    """A transformers causal LM generating from token ids. ``batch_size`` bounds prompts per ``generate`` call."""

    def __init__(self, model_path: str | Path, *, dtype: str = "auto", device: str | None = None,
                 max_model_len: int | None = None, num_threads: int | None = None, batch_size: int = 32,
                 seed: int = 0) -> None:
        from transformers import AutoModelForCausalLM, AutoTokenizer, GenerationConfig

        weight_files(model_path)
        if num_threads is not None:
            torch.set_num_threads(num_threads)
        torch.manual_seed(seed)
        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        self.model = AutoModelForCausalLM.from_pretrained(str(model_path), dtype=dtype).to(self.device).eval()
        self.tokenizer = AutoTokenizer.from_pretrained(str(model_path))
        self.batch_size = batch_size
        config_len = getattr(self.model.config, "max_position_embeddings", None) or 2048
        self.max_model_len = min(max_model_len or config_len, config_len)

        # End-of-sequence ids: the tokenizer's and the model's generation config's (vLLM stops on both too).
        gen_eos = self.model.generation_config.eos_token_id
        eos = set(gen_eos if isinstance(gen_eos, list) else [gen_eos] if gen_eos is not None else [])
        if self.tokenizer.eos_token_id is not None:
            eos.add(self.tokenizer.eos_token_id)
        self.eos_ids = sorted(eos)
        pad = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else self.eos_ids[0]
        self.pad_id = pad
        # A clean generation config, so that sampling defaults shipped with the model (repetition penalty, ...) do not
        # leak into our sampling and break parity with vLLM.
        self.model.generation_config = GenerationConfig(eos_token_id=self.eos_ids, pad_token_id=pad)

    def generate(self, prompts: Sequence[Sequence[int]],
                 sampling: SamplingParams | Sequence[SamplingParams]) -> list[list[Sample]]:
        params = per_prompt(sampling, len(prompts))
        check_prompts(prompts, self.max_model_len)
        results: list[list[Sample] | None] = [None] * len(prompts)
        # Batch prompts whose settings match (the seed is applied once per batch, so it is not part of the key).
        groups: dict[str, list[int]] = {}
        for i, p in enumerate(params):
            groups.setdefault(p.model_dump_json(exclude={"seed"}), []).append(i)
        for indices in groups.values():
            for start in range(0, len(indices), self.batch_size):
                batch = indices[start:start + self.batch_size]
                seeds = [params[i].seed for i in batch if params[i].seed is not None]
                outs = self._generate_batch([prompts[i] for i in batch], params[batch[0]], seeds[0] if seeds else None)
                for i, samples in zip(batch, outs, strict=True):
                    results[i] = samples
        assert all(r is not None for r in results)
        return results  # type: ignore[return-value]

    @torch.no_grad()
    def _generate_batch(self, prompts: list[Sequence[int]], p: SamplingParams, seed: int | None) -> list[list[Sample]]:
        from transformers import GenerationConfig, StoppingCriteriaList

        width = max(len(ids) for ids in prompts)
        input_ids = torch.full((len(prompts), width), self.pad_id, dtype=torch.long)
        attention = torch.zeros((len(prompts), width), dtype=torch.long)
        for row, ids in enumerate(prompts):  # left padding: every prompt ends where generation starts
            input_ids[row, width - len(ids):] = torch.tensor(list(ids), dtype=torch.long)
            attention[row, width - len(ids):] = 1
        # vLLM caps each sample at the context length; do the same (per prompt, applied in _finish).
        limits = [min(p.max_tokens, self.max_model_len - len(ids)) for ids in prompts]
        config = GenerationConfig(
            max_new_tokens=max(limits), num_return_sequences=p.n, do_sample=not p.greedy,
            eos_token_id=self.eos_ids, pad_token_id=self.pad_id, return_dict_in_generate=True, output_scores=True,
            **({} if p.greedy else {"temperature": p.temperature, "top_p": p.top_p, "top_k": p.top_k}),
        )
        stopping = StoppingCriteriaList([_StopOnStrings(self.tokenizer, p.stop, width)]) if p.stop else None
        if seed is not None:
            torch.manual_seed(seed)
        out = self.model.generate(input_ids=input_ids.to(self.device), attention_mask=attention.to(self.device),
                                  generation_config=config, stopping_criteria=stopping)
        new_tokens = out.sequences[:, width:].cpu()
        # scores[t][row] are the processed logits the token at step t was drawn from.
        logprobs = torch.stack([torch.log_softmax(s.float(), dim=-1) for s in out.scores], dim=1).cpu()
        token_logprobs = logprobs.gather(-1, new_tokens[:, : logprobs.shape[1]].unsqueeze(-1)).squeeze(-1)
        results = []
        for row in range(len(prompts)):
            samples = []
            for j in range(p.n):
                r = row * p.n + j  # generate returns the n samples of a prompt next to each other
                samples.append(self._finish(new_tokens[r].tolist(), token_logprobs[r].tolist(), p,
                                            limits[row]))
            results.append(samples)
        return results

    def _finish(self, tokens: list[int], logprobs: list[float], p: SamplingParams, limit: int) -> Sample:
        """Cut one row at its end-of-sequence token, its stop string or its token limit."""
        end, reason = min(limit, len(tokens)), "length"
        for t, tok in enumerate(tokens[:end]):
            if tok in self.eos_ids:
                end, reason = t + 1, "stop"
                break
            if p.stop and _hits_stop(self.tokenizer, tokens[:t + 1], p.stop):
                end, reason = t + 1, "stop"
                break
        ids = tokens[:end]
        # vLLM's incremental detokenizer holds back a trailing incomplete UTF-8 sequence; so do we.
        text = self.tokenizer.decode(ids, skip_special_tokens=True).rstrip("\ufffd")
        if reason == "stop" and p.stop:
            cuts = [text.find(s) + len(s) for s in p.stop if s in text]
            if cuts:
                text = text[:min(cuts)]
        return Sample(token_ids=ids, logprobs=logprobs[:end] if p.logprobs else None, text=text,
                      finish_reason=reason)

    def update_weights_from_path(self, path: str | Path) -> None:
        self._load(iter_checkpoint_tensors(path), source=str(path))

    def update_weights(self, named_tensors: NamedTensors) -> None:
        self._load(named_items(named_tensors), source="update_weights")

    @torch.no_grad()
    def update_adapter(self, named_tensors: NamedTensors, config: dict[str, Any]) -> None:
        """peft's LoRA layers injected once into the loaded model (adapter ``policy``), their weights replaced on
        every update; the base weights stay as they are."""
        from peft import LoraConfig, inject_adapter_in_model

        if not getattr(self, "_adapter_injected", False):
            lora = LoraConfig(**{k: v for k, v in config.items() if k in LoraConfig.__dataclass_fields__})
            lora.inference_mode = True
            self.model = inject_adapter_in_model(lora, self.model, adapter_name=ADAPTER).eval()
            self._adapter_injected = True
        params = dict(self.model.named_parameters())
        for name, tensor in named_items(named_tensors):
            module, matrix = adapter_module_name(name).split(":")
            target = params.get(f"{module}.{matrix}.{ADAPTER}.weight")
            if target is None:
                raise ValueError(f"update_adapter: the model has no LoRA layer for {name}")
            target.copy_(tensor.to(device=target.device, dtype=target.dtype))

    @torch.no_grad()
    def _load(self, items: Any, source: str) -> None:
        """New weights replace the model, so an adapter loaded before is dropped (its B matrices zeroed: it adds
        nothing until the next ``update_adapter``)."""
        if getattr(self, "_adapter_injected", False):
            for name, param in self.model.named_parameters():
                if f".lora_B.{ADAPTER}." in name:
                    param.zero_()
        # remove_duplicate=False: a tied lm_head is listed under its own name too, as in a state_dict
        params = dict(self.model.named_parameters(remove_duplicate=False))
        params.update(dict(self.model.named_buffers(remove_duplicate=False)))
        unknown = []
        for name, tensor in items:
            # with an adapter injected, a LoRA-wrapped layer keeps its own weight under `base_layer`
            target = params.get(name)
            if target is None and name.endswith((".weight", ".bias")):
                stem, _, kind = name.rpartition(".")
                target = params.get(f"{stem}.base_layer.{kind}")
            if target is None:
                unknown.append(name)
                continue
            if target.shape != tensor.shape:
                raise ValueError(f"{source}: {name} has shape {tuple(tensor.shape)}, the model expects "
                                 f"{tuple(target.shape)}")
            target.copy_(tensor.to(device=target.device, dtype=target.dtype))
        if unknown:
            raise ValueError(f"{source}: the model has no tensor named {', '.join(unknown[:5])}"
                             + (f" (and {len(unknown) - 5} more)" if len(unknown) > 5 else ""))

    def close(self) -> None:
        self.model = None
