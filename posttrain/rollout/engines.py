"""One small interface over the two generation backends: vLLM (fast, the default) and transformers ``generate``.

Both take token ids in and give token ids out (never re-tokenized text), with the log-probability the sampler gave
each sampled token, so the RL track can use them as the behaviour policy's log-probs. Log-probs are those of the
distribution the token was actually drawn from (after temperature, top-k and top-p; TRL's "processed" log-probs);
for greedy decoding they are the model's plain log-softmax.

Stop strings end a sample after the token that completes them; the stop string stays at the end of ``text`` (so an
agent loop that stops on ``</tool_call>`` keeps the closing tag), and ``finish_reason`` is ``"stop"``. A sample that
ends with an end-of-sequence token keeps that token in ``token_ids`` (and out of ``text``).

Weights can be replaced without restarting the engine: from a checkpoint folder (``update_weights_from_path``) or from
in-memory tensors named as in a transformers checkpoint, e.g. a training model's ``state_dict()``
(``update_weights``; also as ``PackedTensors``, the form they travel to Ray workers in). Partial updates (a subset
of the tensors) are allowed.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from posttrain.errors import UserError
from posttrain.rollout.config import EngineKind
from posttrain.rollout.packing import PackedTensors
from posttrain.rollout.sampling import SamplingParams

NamedTensors = Mapping[str, torch.Tensor] | Iterable[tuple[str, torch.Tensor]] | PackedTensors


@dataclass
class Sample:
    """One generated continuation of one prompt."""

    token_ids: list[int]
    logprobs: list[float] | None  # one per token in token_ids, or None when not requested
    text: str  # detokenized without special tokens, cut after a stop string
    finish_reason: str  # "stop" (end-of-sequence token or stop string) or "length" (max_tokens reached)

    def to_dict(self) -> dict[str, Any]:
        return {"token_ids": self.token_ids, "logprobs": self.logprobs, "text": self.text,
                "finish_reason": self.finish_reason}


class Engine(ABC):
    """A loaded model that generates from token ids and accepts new weights in place."""

    tokenizer: Any
    max_model_len: int

    @abstractmethod
    def generate(self, prompts: Sequence[Sequence[int]],
                 sampling: SamplingParams | Sequence[SamplingParams]) -> list[list[Sample]]:
        """For each prompt (token ids), ``n`` samples. ``sampling`` is one set for all prompts or one per prompt."""

    @abstractmethod
    def update_weights_from_path(self, path: str | Path) -> None:
        """Load every weight file of a checkpoint folder into the running model."""

    @abstractmethod
    def update_weights(self, named_tensors: NamedTensors) -> None:
        """Load tensors named as in a transformers checkpoint (a full or partial ``state_dict``)."""

    def update_adapter(self, named_tensors: NamedTensors, config: dict[str, Any]) -> None:
        """Generate from now on with this LoRA adapter on the loaded weights: tensors named as peft saves them
        (``get_peft_model_state_dict``), ``config`` a peft ``LoraConfig`` as a dict. A later call replaces it."""
        raise NotImplementedError(f"{type(self).__name__} cannot load LoRA adapters; push merged weights instead")

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release the model (engines hold GBs of memory)."""


def adapter_module_name(peft_name: str) -> str:
    """A peft state-dict name (``base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight``) -> the module path
    inside the base model (``model.layers.0.self_attn.q_proj``) and which matrix (``lora_A``), joined by a colon."""
    name = peft_name.removeprefix("base_model.model.")
    module, _, matrix = name.rpartition(".lora_")
    return f"{module}:lora_{matrix.removesuffix('.weight')}"


def per_prompt(sampling: SamplingParams | Sequence[SamplingParams], n_prompts: int) -> list[SamplingParams]:
    """Normalize ``sampling`` to one params object per prompt."""
    if isinstance(sampling, SamplingParams):
        return [sampling] * n_prompts
    sampling = list(sampling)
    if len(sampling) != n_prompts:
        raise ValueError(f"got {len(sampling)} sampling params for {n_prompts} prompts")
    return sampling


def check_prompts(prompts: Sequence[Sequence[int]], max_model_len: int) -> None:
    """Reject empty prompts and prompts that leave no room for a single new token (both engines then agree:
    a sample stops with ``"length"`` when it reaches ``max_tokens`` or fills the context)."""
    for i, ids in enumerate(prompts):
        if len(ids) == 0:
            raise ValueError(f"prompt {i} is empty")
        if len(ids) >= max_model_len:
            raise ValueError(f"prompt {i} has {len(ids)} tokens; the engine's max_model_len is {max_model_len}")


def weight_files(path: str | Path) -> list[Path]:
    """The safetensors files of a checkpoint folder (what ``save_pretrained`` writes), or a UserError."""
    path = Path(path)
    if not path.is_dir():
        raise UserError(f"{path}: checkpoint folder not found")
    files = sorted(path.glob("*.safetensors"))
    if not files:
        raise UserError(f"{path}: no *.safetensors weight files in this checkpoint folder")
    return files


def iter_checkpoint_tensors(path: str | Path) -> Iterator[tuple[str, torch.Tensor]]:
    """(name, tensor) for every tensor in a checkpoint folder, one file at a time."""
    from safetensors.torch import load_file

    for file in weight_files(path):
        yield from load_file(str(file)).items()


def named_items(named_tensors: NamedTensors) -> list[tuple[str, torch.Tensor]]:
    """A dict, an iterable of pairs or packed tensors -> a list of (name, detached CPU-or-device tensor) pairs."""
    if isinstance(named_tensors, PackedTensors):
        return named_tensors.items()
    items = list(named_tensors.items()) if isinstance(named_tensors, Mapping) else list(named_tensors)
    for item in items:
        if not (isinstance(item, tuple) and len(item) == 2 and isinstance(item[0], str)
                and isinstance(item[1], torch.Tensor)):
            raise TypeError(f"expected (name, tensor) pairs, got {type(item).__name__}")
    return [(name, tensor.detach()) for name, tensor in items]


def make_engine(kind: EngineKind, model_path: str | Path, **kwargs: Any) -> Engine:
    """Build an engine by name: ``"vllm"`` (VLLMEngine) or ``"hf"`` (HFEngine); kwargs go to its constructor."""
    if kind == "vllm":
        from posttrain.rollout.vllm_engine import VLLMEngine

        return VLLMEngine(model_path, **kwargs)
    if kind == "hf":
        from posttrain.rollout.hf_engine import HFEngine

        return HFEngine(model_path, **kwargs)
    raise UserError(f"rollout engine {kind!r}: expected 'vllm' or 'hf'")
