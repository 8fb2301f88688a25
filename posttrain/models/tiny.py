"""Tiny random Llama models with a real byte-level BPE tokenizer, built offline, for tests and benchmarks.

The model is small enough to train in seconds on a CPU, yet shaped so that every consumer loads it unchanged:
transformers and TRL (an ordinary ``LlamaForCausalLM`` folder) and vLLM's CPU backend (head_dim 32 is one of the sizes
its attention kernels support; 2048 positions is enough for packed training rows and rollouts).
The tokenizer is trained on text that ships with Python itself (module docstrings, the Zen of Python) plus chat and
tool-call snippets, so it encodes any UTF-8 (byte-level) and needs no hub.
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
VOCAB_SIZE = 4096
HIDDEN_SIZE = 64
NUM_HEADS = 2  # head_dim = 64 / 2 = 32, the smallest head size vLLM's CPU attention supports
NUM_LAYERS = 2
MAX_POSITIONS = 2048
# What save_pretrained writes for the tiny model (across transformers versions); a folder holding anything else is not
# one we may replace.
TINY_FILES = {"config.json", "generation_config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json",
              "special_tokens_map.json", "chat_template.jinja"}
TINY_SHAPE = {"model_type": "llama", "hidden_size": HIDDEN_SIZE, "num_hidden_layers": NUM_LAYERS,
              "num_attention_heads": NUM_HEADS, "max_position_embeddings": MAX_POSITIONS}
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
    return texts


def build_tokenizer(vocab_size: int = VOCAB_SIZE):
    """A byte-level BPE tokenizer (transformers fast tokenizer) with the ChatML special tokens and our chat template."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(_corpus(), trainer=trainer)
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token=IM_START,
        eos_token=IM_END,
        pad_token=PAD,
        unk_token=ENDOFTEXT,
        model_max_length=MAX_POSITIONS,
        padding_side="right",
    )
    return install_chat_template(tokenizer)


def _not_a_tiny_model(folder: Path) -> str | None:
    """None when ``folder`` holds an earlier tiny model and nothing else, else what it holds (for the message)."""
    names = {p.name for p in folder.iterdir()}
    try:
        config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        config = None
    shaped = isinstance(config, dict) and all(config.get(k) == v for k, v in TINY_SHAPE.items())
    if shaped and names <= TINY_FILES:
        return None
    if shaped:
        return f"a tiny model plus other files ({', '.join(sorted(names - TINY_FILES))})"
    return f"files that are not a tiny model ({listing(folder)})"


def make_tiny_model(out_dir: str | Path, seed: int = 0) -> Path:
    """Write a tiny random Llama model + tokenizer (+ chat template) to ``out_dir`` with ``save_pretrained``.

    Deterministic for a given ``seed`` and Python version. ``out_dir`` must be absent, empty or an earlier tiny model
    (anything else is a UserError, not deleted). The folder is written atomically: a crash never leaves a
    half-written model where a caller expects a whole one.
    """
    out_dir = Path(out_dir)
    check_may_replace(out_dir, "a tiny model", _not_a_tiny_model, WHAT)
    import torch
    from transformers import GenerationConfig, LlamaConfig, LlamaForCausalLM

    tokenizer = build_tokenizer()
    # Round the embedding size up to a multiple of 64 (as real models do); ids past the tokenizer are never produced.
    vocab_size = -(-len(tokenizer) // 64) * 64
    config = LlamaConfig(
        vocab_size=vocab_size,
        hidden_size=HIDDEN_SIZE,
        intermediate_size=4 * HIDDEN_SIZE,
        num_hidden_layers=NUM_LAYERS,
        num_attention_heads=NUM_HEADS,
        num_key_value_heads=NUM_HEADS,
        head_dim=HIDDEN_SIZE // NUM_HEADS,
        max_position_embeddings=MAX_POSITIONS,
        tie_word_embeddings=True,
        bos_token_id=tokenizer.convert_tokens_to_ids(IM_START),
        eos_token_id=tokenizer.convert_tokens_to_ids(IM_END),
        pad_token_id=tokenizer.convert_tokens_to_ids(PAD),
    )
    torch.manual_seed(seed)
    model = LlamaForCausalLM(config).to(torch.float32)
    model.generation_config = GenerationConfig(
        bos_token_id=config.bos_token_id,
        eos_token_id=[config.eos_token_id, tokenizer.convert_tokens_to_ids(ENDOFTEXT)],
        pad_token_id=config.pad_token_id,
    )

    with output_lock(out_dir, WHAT):
        check_may_replace(out_dir, "a tiny model", _not_a_tiny_model, WHAT)  # again, now that no one else writes it
        with staged_folder(out_dir) as staging:
            model.save_pretrained(staging)
            tokenizer.save_pretrained(staging)
    return out_dir
