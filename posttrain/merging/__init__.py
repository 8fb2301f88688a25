"""Model merging: combine models fine-tuned from one base (full folders or LoRA adapters) into one model.

- ``methods``: linear / task_arithmetic / ties, computed by mergekit; our config -> mergekit parameters in one place.
- ``inputs``: classify input folders and check they fit the base (architecture, tensor shapes, tokenizer).
- ``lora``: check a LoRA adapter against the base and fold it into a full float32 model with peft.
- ``distances``: L2 distances between the merged model, its inputs and the base, streamed tensor by tensor.

The stage that strings these together is ``posttrain.stages.merge``.
"""

from posttrain.merging.methods import METHODS, merge_tensors, mergekit_config, method_parameters, run_mergekit

__all__ = ["METHODS", "merge_tensors", "mergekit_config", "method_parameters", "run_mergekit"]
