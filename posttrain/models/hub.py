"""Models named by a Hugging Face Hub id: ``Qwen/Qwen3-0.6B``, or ``Qwen/Qwen3-0.6B@<revision>`` (a branch, tag or
commit), resolved through ``huggingface_hub`` exactly as transformers resolves them.

The cache, the environment and the tokens are huggingface_hub's own: ``HF_HOME`` / ``HF_HUB_CACHE`` say where the
cache is, ``HF_HUB_OFFLINE=1`` (or ``TRANSFORMERS_OFFLINE=1``) means "the cache only", ``HF_TOKEN`` or ``hf auth
login`` gives access to gated repos. The environment is read when a model is resolved (not when huggingface_hub was
imported), so a test or a long-lived process that sets it first gets what it asked for.

Only what posttrain loads is downloaded: configs, tokenizer files, chat templates and safetensors weights (not
``*.bin`` duplicates, ``original/`` consolidated checkpoints or ONNX exports). Every resolution is remembered for the
run, so manifests record which commit a Hub id stood for (:func:`hub_record`).
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from posttrain.errors import UserError

# What posttrain reads from a model repo (snapshot_download's allow_patterns).
ALLOW_PATTERNS = ["*.json", "*.safetensors", "*.jinja", "*.model", "*.txt", "*.tiktoken", "tokenizer*"]
IGNORE_PATTERNS = ["original/*", "onnx/*", "*.onnx*", "coreml/*", "openvino/*"]
# A repo id: "org/name"; letters, digits, "-", "_", "." only. (Legacy ids without an org, such as gpt2, redirect to
# org ids on the Hub; a bare word is more likely a mistyped local folder, which must not start a network lookup.)
_REPO_ID = re.compile(r"^[A-Za-z0-9][\w.\-]{0,95}/[A-Za-z0-9][\w.\-]{0,95}$")
_SNAPSHOT = re.compile(r"(?:^|/)models--(?P<repo>[^/]+)/snapshots/(?P<commit>[0-9a-f]{40})(?:/|$)")


@dataclass(frozen=True)
class HubModel:
    """What a Hub id resolved to: the repo, the revision asked for, the commit it stood for, the local snapshot."""

    repo_id: str
    revision: str | None
    commit: str
    path: Path

    def to_dict(self) -> dict[str, Any]:
        return {"repo_id": self.repo_id, "revision": self.revision or "main", "commit": self.commit,
                "path": str(self.path)}


_RESOLVED: dict[str, HubModel] = {}  # spec as written -> what it resolved to, in this process


def split_spec(spec: str) -> tuple[str, str | None]:
    """``org/name@revision`` -> (``org/name``, ``revision``); no ``@``: revision None (the repo's ``main``)."""
    repo, sep, revision = spec.partition("@")
    return repo, (revision if sep else None)


def looks_like_hub_id(spec: str) -> bool:
    """Could ``spec`` be a Hub id (optionally ``@revision``)? Paths (``./x``, ``/x``, ``~/x``, ``a/b/c``) cannot."""
    repo, revision = split_spec(spec)
    if revision is not None and not revision.strip():
        return False
    return bool(_REPO_ID.match(repo)) and not repo.startswith((".", "~")) and ".." not in repo


def hub_cache_dir() -> str:
    """huggingface_hub's cache folder, from the environment as it is now (``HF_HUB_CACHE``, else
    ``HF_HOME/hub``, else huggingface_hub's default)."""
    from huggingface_hub import constants

    if os.environ.get("HF_HUB_CACHE"):
        return os.path.expanduser(os.path.expandvars(os.environ["HF_HUB_CACHE"]))
    if os.environ.get("HF_HOME"):
        return os.path.join(os.path.expanduser(os.path.expandvars(os.environ["HF_HOME"])), "hub")
    return constants.HF_HUB_CACHE


def hub_offline() -> bool:
    """``HF_HUB_OFFLINE`` (or ``TRANSFORMERS_OFFLINE``) is set to a true value now."""
    value = os.environ.get("HF_HUB_OFFLINE") or os.environ.get("TRANSFORMERS_OFFLINE") or ""
    return value.strip().upper() in {"1", "ON", "YES", "TRUE"}


def resolve_hub_model(spec: str, key: str) -> Path:
    """A Hub id (``org/name`` or ``org/name@revision``) -> the local snapshot folder, downloading what is missing
    unless offline. Every failure is a UserError naming ``key``, the id and what to do."""
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import (
        GatedRepoError,
        HfHubHTTPError,
        IncompleteSnapshotError,
        LocalEntryNotFoundError,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    repo_id, revision = split_spec(spec)
    offline = hub_offline()
    where = f"{key}: {spec!r}"
    try:
        folder = snapshot_download(repo_id, revision=revision, cache_dir=hub_cache_dir(), local_files_only=offline,
                                   allow_patterns=ALLOW_PATTERNS, ignore_patterns=IGNORE_PATTERNS)
    except RevisionNotFoundError:
        raise UserError(f"{where}: the Hub repo {repo_id} has no revision {revision!r}; expected a branch, tag or "
                        "commit of it") from None
    except GatedRepoError:
        raise UserError(f"{where}: {repo_id} is gated; accept its license on huggingface.co and log in "
                        "(`hf auth login`, or set HF_TOKEN)") from None
    except RepositoryNotFoundError:
        raise UserError(f"{where}: not a local folder, a known model name, or a Hub repo this account can see "
                        f"({repo_id} was not found on the Hub; private repos need `hf auth login` or HF_TOKEN)"
                        ) from None
    except IncompleteSnapshotError as e:
        raise UserError(f"{where}: the cached snapshot is incomplete ({e}); finish the download (`hf download "
                        f"{repo_id}`) with network access") from None
    except LocalEntryNotFoundError:
        if offline:
            raise UserError(f"{where}: not a local folder or a known model name, and the Hub model {repo_id}"
                            f"{'@' + revision if revision else ''} is not in the local Hugging Face cache "
                            f"({hub_cache_dir()}) while HF_HUB_OFFLINE is set; download it first "
                            f"(`hf download {repo_id}{' --revision ' + revision if revision else ''}` on a machine "
                            "with access, with the same HF_HOME), point HF_HOME at a cache that has it, or unset "
                            "HF_HUB_OFFLINE") from None
        raise UserError(f"{where}: not a local folder or a known model name, and the Hugging Face Hub could not be "
                        f"reached to download {repo_id} (nor is it in the cache at {hub_cache_dir()}); check the "
                        "network, or pre-download it (`hf download ...`) and set HF_HUB_OFFLINE=1") from None
    except HfHubHTTPError as e:
        raise UserError(f"{where}: the Hugging Face Hub refused the download of {repo_id}: {e}") from None
    except (OSError, ValueError) as e:  # an incomplete cached snapshot, a bad revision string, a full disk
        raise UserError(f"{where}: cannot use the Hub model {repo_id}: {e}") from None
    path = Path(folder)
    origin = snapshot_origin(path)
    commit = origin[1] if origin else (revision or "")
    _RESOLVED[spec] = HubModel(repo_id, revision, commit, path)
    return path


def snapshot_origin(path: str | Path) -> tuple[str, str] | None:
    """(repo id, commit) when ``path`` is (inside) a Hub cache snapshot ``models--ORG--NAME/snapshots/<commit>``."""
    match = _SNAPSHOT.search(Path(path).as_posix())
    if match is None:
        return None
    return match.group("repo").replace("--", "/"), match.group("commit")


def hub_record(values: Any) -> dict[str, dict[str, Any]]:
    """For a manifest: every Hub model among ``values`` (strings, nested in dicts and lists: a config, the inputs'
    paths) -> repo id, revision asked for, commit. A spec resolved in this run is recorded under the spec as
    written; a path inside a Hub cache snapshot under the path."""
    found: dict[str, dict[str, Any]] = {}

    def visit(value: Any) -> None:
        if isinstance(value, dict):
            for k, v in value.items():
                visit(k)
                visit(v)
        elif isinstance(value, (list, tuple)):
            for v in value:
                visit(v)
        elif isinstance(value, str):
            if value in _RESOLVED:
                found[value] = _RESOLVED[value].to_dict()
            else:
                origin = snapshot_origin(value)
                if origin is not None:
                    found[value] = {"repo_id": origin[0], "commit": origin[1]}

    visit(values)
    return found
