"""An example MCP server for the ``mcp`` environment (docs/environments.md, "Your MCP servers"): a note book that
lives in the server's memory, so every episode starts from the notes its task gives.

    python examples/mcp/notes_server.py '{"groceries": "milk, eggs"}'     # stdio; the argument is the start state

Written with the ``mcp`` SDK's ``MCPServer`` (FastMCP's successor). ``list_notes`` and ``read_note`` only read: a
task's checks probe the final state through them. A refusal is a ``ToolError`` (its message reaches the model; any
other exception is reported as a crash without its text).
"""

from __future__ import annotations

import json
import sys

from mcp.server.mcpserver import MCPServer
from mcp.server.mcpserver.exceptions import ToolError

app = MCPServer("notes")
NOTES: dict[str, str] = json.loads(sys.argv[1]) if len(sys.argv) > 1 else {}


@app.tool()
def list_notes() -> list[str]:
    """The titles of all notes, in alphabetical order."""
    return sorted(NOTES)


@app.tool()
def read_note(title: str) -> str:
    """The text of one note."""
    if title not in NOTES:
        raise ToolError(f"no note called {title!r}")
    return NOTES[title]


@app.tool()
def write_note(title: str, text: str) -> dict:
    """Create a note, or replace the text of an existing one."""
    created = title not in NOTES
    NOTES[title] = text
    return {"title": title, "created": created, "notes": len(NOTES)}


@app.tool()
def delete_note(title: str) -> dict:
    """Delete a note."""
    if title not in NOTES:
        raise ToolError(f"no note called {title!r}")
    del NOTES[title]
    return {"deleted": title, "notes": len(NOTES)}


if __name__ == "__main__":
    app.run()
