"""Tiny random models with a real byte-level BPE tokenizer, built offline, for tests and benchmarks.

The model is small enough to train in seconds on a CPU, yet shaped so that every consumer loads it unchanged:
transformers and TRL (an ordinary ``LlamaForCausalLM`` / ``Qwen3ForCausalLM`` folder) and vLLM's CPU backend (head_dim
32 is one of the sizes its attention kernels support; 2048 positions is enough for packed training rows and rollouts).
The tokenizer is trained on text that ships with Python itself (module docstrings, the Zen of Python) plus chat and
tool-call snippets, so it encodes any UTF-8 (byte-level) and needs no hub.

A ``family`` gives the model the special tokens, architecture and chat template of a real model family, so that every
stage can be tested on templates other than ChatML:

- ``chatml`` (default): Llama weights, ChatML tokens, posttrain's extended ChatML template (Hermes tools, masks).
- ``qwen3``: Qwen3 weights and tokens (``<think>``, ``<tool_call>``, ...) with Qwen3's own chat template as TRL ships
  it (``trl.chat_template_utils.qwen3_chat_template``): Hermes tool calls, thinking blocks dropped from earlier turns.
- ``llama3``: Llama weights with Llama 3's header tokens and Llama 3.2's own chat template (TRL's copy): JSON tool
  calls (``{"name": ..., "parameters": ...}``), ``ipython`` tool results, ``<|eot_id|>`` ends a turn.
- ``plain``: a base model with no chat template at all (give one with the ``chat_template`` config key).
"""

from __future__ import annotations

import codecs
import contextlib
import importlib
import io
import json
from pathlib import Path

from posttrain.atomic import output_lock, staged_folder
from posttrain.models.chat_template import IM_END, IM_START, install_chat_template
from posttrain.paths import check_may_replace, listing

ENDOFTEXT = "<|endoftext|>"
PAD = "<|pad|>"
SPECIAL_TOKENS = [ENDOFTEXT, IM_START, IM_END, PAD]
FAMILIES = ("chatml", "qwen3", "llama3", "plain")
QWEN3_TEXT_TOKENS = ["<think>", "</think>", "<tool_call>", "</tool_call>", "<tool_response>", "</tool_response>"]
LLAMA3_TOKENS = ["<|begin_of_text|>", "<|end_of_text|>", "<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>",
                 "<|eom_id|>", "<|python_tag|>", "<|finetune_right_pad_id|>"]
VOCAB_SIZE = 4096
HIDDEN_SIZE = 64
NUM_HEADS = 2  # head_dim = 64 / 2 = 32, the smallest head size vLLM's CPU attention supports
NUM_LAYERS = 2
MAX_POSITIONS = 2048
# What save_pretrained writes for the tiny model (across transformers versions); a folder holding anything else is not
# one we may replace.
TINY_FILES = {"config.json", "generation_config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json",
              "special_tokens_map.json", "chat_template.jinja"}
TINY_SHAPE = {"hidden_size": HIDDEN_SIZE, "num_hidden_layers": NUM_LAYERS, "num_attention_heads": NUM_HEADS,
              "max_position_embeddings": MAX_POSITIONS}
TINY_TYPES = ("llama", "qwen3")
WHAT = "tiny model folder"

# Standard-library modules whose docstrings make a deterministic English + code corpus for the tokenizer.
_CORPUS_MODULES = (
    "builtins", "json", "re", "string", "textwrap", "collections", "itertools", "functools", "pathlib", "os",
    "math", "random", "statistics", "datetime", "argparse", "subprocess", "enum", "dataclasses", "unittest",
)


def _corpus() -> list[str]:
    """Deterministic training text for the tokenizer: stdlib docstrings, the Zen of Python, chat/tool snippets."""
    with contextlib.redirect_stdout(io.StringIO()):  # importing `this` prints the Zen; we only want its text
        import this

    texts = [codecs.decode(this.s, "rot13")]
    for name in _CORPUS_MODULES:
        module = importlib.import_module(name)
        texts.append(module.__doc__ or "")
        for attr in sorted(dir(module)):
            doc = getattr(getattr(module, attr, None), "__doc__", None)
            if isinstance(doc, str):
                texts.append(doc)
    for i in range(200):
        a, b = (i * 37) % 101, (i * 53) % 97
        call = {"name": "add", "arguments": {"a": a, "b": b}}
        texts.append(f"What is {a} + {b}? <tool_call>{json.dumps(call)}</tool_call> The answer is {a + b}.")
        texts.append(f"def f{i}(x):\n    return x * {a} + {b}\n")
        texts.append(f'<think>\n{a} plus {b}\n</think>\n\n{{"name": "add", "parameters": {{"a": {a}, "b": {b}}}}}')
    return texts


def _special_tokens(family: str) -> list[str]:
    if family == "llama3":
        return [ENDOFTEXT, PAD, *LLAMA3_TOKENS]
    if family == "plain":
        return [ENDOFTEXT, PAD]
    return list(SPECIAL_TOKENS)


def build_tokenizer(vocab_size: int = VOCAB_SIZE, family: str = "chatml"):
    """A byte-level BPE tokenizer (transformers fast tokenizer) with the family's special tokens and chat template."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    if family not in FAMILIES:
        from posttrain.errors import UserError

        raise UserError(f"tiny model family {family!r}: expected one of {', '.join(FAMILIES)}")
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=_special_tokens(family),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(_corpus(), trainer=trainer)
    common = {"model_max_length": MAX_POSITIONS, "padding_side": "right"}
    if family == "llama3":
        tokenizer = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<|begin_of_text|>", eos_token="<|eot_id|>",
                                            pad_token="<|finetune_right_pad_id|>", unk_token=ENDOFTEXT, **common)
    elif family == "plain":
        tokenizer = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token=ENDOFTEXT, eos_token=ENDOFTEXT,
                                            pad_token=PAD, unk_token=ENDOFTEXT, **common)
    elif family == "qwen3":
        tokenizer = PreTrainedTokenizerFast(tokenizer_object=tok, eos_token=IM_END, pad_token=ENDOFTEXT,
                                            unk_token=ENDOFTEXT, **common)
        tokenizer.add_tokens(QWEN3_TEXT_TOKENS)  # Qwen3 has these as added (not special) tokens
    else:
        tokenizer = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token=IM_START, eos_token=IM_END, pad_token=PAD,
                                            unk_token=ENDOFTEXT, **common)
    return _with_template(tokenizer, family)


def _with_template(tokenizer, family: str):
    """The family's own chat template (TRL ships the real Qwen3 and Llama 3.2 ones; we use them from there)."""
    if family == "chatml":
        return install_chat_template(tokenizer)
    if family == "qwen3":
        from trl.chat_template_utils import qwen3_chat_template

        tokenizer.chat_template = qwen3_chat_template
    elif family == "llama3":
        from trl.chat_template_utils import llama3_2_chat_template

        tokenizer.chat_template = llama3_2_chat_template
    return tokenizer


def _not_a_tiny_model(folder: Path) -> str | None:
    """None when ``folder`` holds an earlier tiny model and nothing else, else what it holds (for the message)."""
    names = {p.name for p in folder.iterdir()}
    try:
        config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        config = None
    shaped = (isinstance(config, dict) and config.get("model_type") in TINY_TYPES
              and all(config.get(k) == v for k, v in TINY_SHAPE.items()))
    if shaped and names <= TINY_FILES:
        return None
    if shaped:
        return f"a tiny model plus other files ({', '.join(sorted(names - TINY_FILES))})"
    return f"files that are not a tiny model ({listing(folder)})"


def make_tiny_model(out_dir: str | Path, seed: int = 0, family: str = "chatml") -> Path:
    """Write a tiny random model + tokenizer (+ chat template) of a ``family`` (module doc) to ``out_dir`` with
    ``save_pretrained``.

    Deterministic for a given ``seed``, family and Python version. ``out_dir`` must be absent, empty or an earlier
    tiny model (anything else is a UserError, not deleted). The folder is written atomically: a crash never leaves a
    half-written model where a caller expects a whole one.
    """
    out_dir = Path(out_dir)
    check_may_replace(out_dir, "a tiny model", _not_a_tiny_model, WHAT)
    import torch
    from transformers import GenerationConfig, LlamaConfig, LlamaForCausalLM, Qwen3Config, Qwen3ForCausalLM

    tokenizer = build_tokenizer(family=family)
    # Round the embedding size up to a multiple of 64 (as real models do); ids past the tokenizer are never produced.
    vocab_size = -(-len(tokenizer) // 64) * 64
    ends = {"chatml": [IM_END, ENDOFTEXT], "qwen3": [IM_END, ENDOFTEXT], "plain": [ENDOFTEXT],
            "llama3": ["<|eot_id|>", "<|end_of_text|>", "<|eom_id|>"]}[family]
    eos_ids = [tokenizer.convert_tokens_to_ids(t) for t in ends]
    bos_id = tokenizer.bos_token_id
    shape = dict(vocab_size=vocab_size, hidden_size=HIDDEN_SIZE, intermediate_size=4 * HIDDEN_SIZE,
                 num_hidden_layers=NUM_LAYERS, num_attention_heads=NUM_HEADS, num_key_value_heads=NUM_HEADS,
                 head_dim=HIDDEN_SIZE // NUM_HEADS, max_position_embeddings=MAX_POSITIONS, tie_word_embeddings=True,
                 bos_token_id=bos_id, eos_token_id=eos_ids[0], pad_token_id=tokenizer.pad_token_id)
    config_cls, model_cls = (Qwen3Config, Qwen3ForCausalLM) if family == "qwen3" else (LlamaConfig, LlamaForCausalLM)
    config = config_cls(**shape)
    torch.manual_seed(seed)
    model = model_cls(config).to(torch.float32)
    model.generation_config = GenerationConfig(bos_token_id=bos_id, eos_token_id=eos_ids,
                                               pad_token_id=config.pad_token_id)

    with output_lock(out_dir, WHAT):
        check_may_replace(out_dir, "a tiny model", _not_a_tiny_model, WHAT)  # again, now that no one else writes it
        with staged_folder(out_dir) as staging:
            model.save_pretrained(staging)
            tokenizer.save_pretrained(staging)
    return out_dir
