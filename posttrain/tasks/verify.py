"""The ``verify`` section of every stage that verifies, and starting its verifier pools (one per environment)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from pydantic import Field

from posttrain.config import Schema
from posttrain.tasks.ray_verify import RayVerifiers


class VerifySettings(Schema):
    workers: int = Field(2, ge=1, description="verifier processes (or Ray actors) per environment")
    timeout_s: float = Field(60.0, gt=0, description="per trajectory; a slower one is a failure, never a pass")
    max_in_flight: int | None = Field(None, ge=1, description="trajectories pulled ahead of the results (memory)")
    ray: RayVerifiers | None = Field(None, description="run the verifiers as Ray actors with these resources (CPU "
                                     "nodes of a cluster) instead of processes of this machine")


class Verifiers(dict):
    """``env -> VerifyPool``, started together and closed together (also when one of them cannot start)::

        with Verifiers.start(cfg.verify, envs, cfg.envs) as verifiers:
            verifiers["math"].verify_all(trajectories)
    """

    @classmethod
    def start(cls, settings: VerifySettings, envs: Iterable[str],
              env_kwargs: Mapping[str, dict[str, Any]] | None = None) -> Verifiers:
        from posttrain.tasks.ray_verify import RayVerifyPool
        from posttrain.verify_pool import VerifyPool

        verifiers = cls()
        try:
            for env in sorted(set(envs)):
                common = {"workers": settings.workers, "max_in_flight": settings.max_in_flight,
                          "timeout_s": settings.timeout_s, "env_kwargs": (env_kwargs or {}).get(env)}
                verifiers[env] = RayVerifyPool(env, **common, placement=settings.ray) if settings.ray is not None \
                    else VerifyPool(env, **common)
        except BaseException:
            verifiers.close()
            raise
        return verifiers

    def close(self) -> None:
        for verifier in self.values():
            verifier.close()

    def __enter__(self) -> Verifiers:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
