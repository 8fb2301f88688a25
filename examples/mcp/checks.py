"""An example check function for ``mcp`` tasks: ``check(trajectory, probe)`` with ``probe(name, arguments)`` calling a
tool on the servers after the model's calls were replayed on them (a refusal comes back as ``{"error": message}``)."""

from __future__ import annotations


def groceries_have_bread(trajectory, probe):
    """Passed when the groceries note mentions bread and still mentions everything it held before."""
    text = probe("read_note", {"title": "groceries"})
    if not isinstance(text, str):  # the note is gone
        return {"passed": False, "score": 0.0, "reasons": ["groceries_deleted"]}
    text = text.lower()
    kept = all(item in text for item in ("milk", "eggs"))
    return {"passed": "bread" in text and kept, "score": ("bread" in text) * 0.5 + kept * 0.5,
            "reasons": [] if "bread" in text and kept else ["groceries_not_updated"]}
