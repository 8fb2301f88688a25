"""Recipe format ``ifeval`` (kind ``task``): IFEval-shaped rows (``prompt``, ``instruction_id_list``, ``kwargs``,
optional ``key``) as ``instruction_following`` tasks. ``kwargs`` may be a JSON string; the ``None`` values IFEval's
published data carries for unused keys are dropped. A row whose instructions the checkers cannot take (an unknown id,
wrong or missing kwargs) raises :class:`MalformedRow`."""

from __future__ import annotations

import hashlib
import json
from typing import Any

from envs.instruction_following import task_instructions
from posttrain.data.formats import json_value
from posttrain.data.sources import MalformedRow
from posttrain.errors import UserError


def from_ifeval(record: dict[str, Any]) -> dict[str, Any]:
    prompt = record.get("prompt")
    if not isinstance(prompt, str) or not prompt.strip():
        raise MalformedRow("prompt: expected the instruction text as a non-empty string")
    ids = json_value(record.get("instruction_id_list"), "instruction_id_list")
    kwargs = json_value(record.get("kwargs"), "kwargs")
    if kwargs is None and isinstance(ids, list):
        kwargs = [{}] * len(ids)
    if isinstance(kwargs, list):
        kwargs = [{k: v for k, v in (kw or {}).items() if v is not None} if isinstance(kw, dict | type(None)) else kw
                  for kw in kwargs]
    key = record.get("key", record.get("id"))
    ident = str(key) if isinstance(key, str | int) and str(key).strip() else \
        hashlib.sha1(prompt.encode()).hexdigest()[:12]
    task = {"id": f"ifeval-{ident}", "env": "instruction_following", "source": "ifeval",
            "messages": [{"role": "user", "content": prompt}], "tools": [], "prompt": prompt,
            "instruction_id_list": ids, "kwargs": kwargs}
    try:
        task_instructions(task)
    except UserError as e:
        raise MalformedRow(e.message.split(": ", 1)[-1]) from None
    return json.loads(json.dumps(task))  # plain JSON data (no tuples), as every task record
