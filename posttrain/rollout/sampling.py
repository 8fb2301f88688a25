"""Typed sampling parameters shared by every engine, with presets and per-bucket overrides.

``SamplingParams`` is what an engine consumes: concrete values, one set per request. ``SamplingConfig`` is what a user
writes in a stage config: a preset, optional overrides of any field, and optional per-bucket overrides::

    sampling:
      preset: reasoning       # temperature 0.6, top_p 0.95, top_k 20
      max_tokens: 1024
      buckets:
        code: {max_tokens: 2048}

Reasoning models must never decode greedily (they loop and degrade), so the ``reasoning`` preset rejects
``temperature: 0`` wherever it appears, naming the key.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, model_validator

from posttrain.config import Schema
from posttrain.errors import UserError

PresetName = Literal["default", "reasoning"]


class SamplingParams(Schema):
    """Concrete sampling settings for one request. ``temperature: 0`` means greedy; ``top_k: 0`` disables top-k."""

    n: int = Field(1, ge=1, description="samples per prompt")
    temperature: float = Field(1.0, ge=0.0)
    top_p: float = Field(1.0, gt=0.0, le=1.0)
    top_k: int = Field(0, ge=0, description="0 keeps every token")
    max_tokens: int = Field(256, ge=1, description="new tokens per sample")
    stop: list[str] = Field(default_factory=list, description="stop strings (kept at the end of the text)")
    seed: int | None = Field(None, description="per-request seed; None samples from the engine's generator")
    logprobs: bool = Field(True, description="return the log-probability of every sampled token")

    @model_validator(mode="after")
    def _greedy_means_one_sample(self) -> SamplingParams:
        if self.temperature == 0.0 and self.n > 1:
            raise ValueError(f"n: {self.n} samples with temperature 0 (greedy) would all be the same; use n: 1 or a "
                             "temperature above 0")
        return self

    @property
    def greedy(self) -> bool:
        return self.temperature == 0.0

    def with_updates(self, **changes: Any) -> SamplingParams:
        """A validated copy with some fields changed (``model_copy`` would skip validation)."""
        return SamplingParams.model_validate({**self.model_dump(), **changes})


PRESETS: dict[str, SamplingParams] = {
    "default": SamplingParams(),
    "reasoning": SamplingParams(temperature=0.6, top_p=0.95, top_k=20),
}


class SamplingOverrides(Schema):
    """Any subset of the sampling fields; unset (None) fields keep the preset's value."""

    n: int | None = Field(None, ge=1)
    temperature: float | None = Field(None, ge=0.0)
    top_p: float | None = Field(None, gt=0.0, le=1.0)
    top_k: int | None = Field(None, ge=0)
    max_tokens: int | None = Field(None, ge=1)
    stop: list[str] | None = None
    seed: int | None = None
    logprobs: bool | None = None

    def set_fields(self) -> dict[str, Any]:
        """The sampling fields given (not None); subclasses' own fields (preset, buckets) are not sampling fields."""
        return {k: getattr(self, k) for k in SamplingOverrides.model_fields if getattr(self, k) is not None}


class SamplingConfig(SamplingOverrides):
    """The ``sampling`` section of a stage config: preset + overrides + per-bucket overrides."""

    preset: PresetName = "default"
    buckets: dict[str, SamplingOverrides] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _never_greedy_for_reasoning(self) -> SamplingConfig:
        # A ValueError here becomes a UserError naming the config file when loaded through posttrain.config.
        if self.preset == "reasoning":
            if self.temperature == 0:
                raise ValueError("temperature: 0 (greedy) is not allowed with the reasoning preset; reasoning models "
                                 "must be sampled (use e.g. temperature 0.6)")
            for bucket, over in self.buckets.items():
                if over.temperature == 0:
                    raise ValueError(f"buckets.{bucket}.temperature: 0 (greedy) is not allowed with the reasoning "
                                     "preset; reasoning models must be sampled (use e.g. temperature 0.6)")
        return self

    def resolve(self, bucket: str | None = None) -> SamplingParams:
        """The concrete params for a bucket (or the base params when ``bucket`` is None or has no overrides)."""
        from posttrain.config import validate

        values = {**PRESETS[self.preset].model_dump(), **self.set_fields()}
        source = "sampling"
        if bucket is not None and bucket in self.buckets:
            values.update(self.buckets[bucket].set_fields())
            source = f"sampling (bucket {bucket})"
        return validate(SamplingParams, values, source)

    def check_buckets(self, known: set[str] | list[str], source: str = "sampling") -> None:
        """Overrides for buckets that are not in the data would be silently unused: make them an error."""
        unknown = sorted(set(self.buckets) - set(known))
        if unknown:
            raise UserError(f"{source}.buckets: overrides for unknown bucket(s) {', '.join(unknown)}; "
                            f"buckets in the data: {', '.join(sorted(known)) or '(none)'}")


    def per_bucket(self, buckets: set[str] | list[str], source: str = "sampling",
                   n: int | None = None) -> dict[str, SamplingParams]:
        """Concrete params for every bucket of the data (``n``: the samples per prompt the stage takes). Overrides for
        buckets the data lacks, a ``seed`` (stages derive per-prompt seeds themselves) and settings that do not fit
        together (greedy with n > 1) are UserErrors naming ``source``."""
        from pydantic import ValidationError

        self.check_buckets(buckets, source=source)
        if self.seed is not None or any(b.seed is not None for b in self.buckets.values()):
            raise UserError(f"{source}.seed: per-prompt sampling seeds derive from the top-level `seed` key; remove "
                            f"{source}.seed")
        params = {}
        for bucket in sorted(set(buckets)):
            try:
                params[bucket] = self.resolve(bucket) if n is None else self.resolve(bucket).with_updates(n=n)
            except ValidationError as e:
                reason = e.errors()[0]["msg"].removeprefix("Value error, ")
                raise UserError(f"{source} (bucket {bucket}): {reason}") from None
        return params


def sampling_config(data: dict[str, Any] | None, source: str = "sampling") -> SamplingConfig:
    """Validate a plain ``sampling`` mapping (e.g. read from YAML), raising UserError naming ``source``."""
    from posttrain.config import validate

    return validate(SamplingConfig, data or {}, source)


def preset(name: str, **overrides: Any) -> SamplingParams:
    """``preset("reasoning", max_tokens=512)`` -> concrete params; greedy is refused for the reasoning preset."""
    if name not in PRESETS:
        raise UserError(f"sampling preset {name!r}: expected one of {', '.join(PRESETS)}")
    return sampling_config({"preset": name, **overrides}, source=f"sampling preset {name!r}").resolve()
