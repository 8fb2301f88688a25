"""Parsing untrusted JSON rows: a line of text becomes an object, or a short reason why it is not a usable row.

Used wherever rows come from a user's file (data build sources, ``envs verify`` trajectories), so that one bad row is
counted as malformed with its file and line instead of ending the whole command with a traceback:

* bytes that are not UTF-8: files are read with ``errors="surrogateescape"``, which keeps line splitting exactly as a
  strict read would and turns each undecodable byte into one character U+DC80..U+DCFF that is found here;
* invalid JSON, numbers longer than Python's integer-digit limit, nesting deeper than the recursion limit;
* lone UTF-16 surrogate escapes such as ``"\\ud800"``: valid JSON, but no UTF-8 writer (parquet, JSONL, hashing)
  can encode them.
"""

from __future__ import annotations

import json
import re
from typing import Any

ENCODING_ERRORS = "surrogateescape"  # open text files with this, then check lines with :func:`bad_bytes`

_ESCAPED_BYTE = re.compile("[\udc80-\udcff]")
_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F]")
_SURROGATE = re.compile("[\ud800-\udfff]")
_STRING = re.compile(r'"(?:[^"\\]|\\.)*"', re.DOTALL)
NESTED = "invalid JSON: nested too deeply (about 1000 levels or more)"


class BadRow(ValueError):
    """Why a row could not be used; the message is the reason shown with the row's file and line."""


def bad_bytes(text: str) -> str | None:
    """The reason a line read with ``surrogateescape`` held bytes that are not UTF-8, or None."""
    m = _ESCAPED_BYTE.search(text)
    if m is None:
        return None
    return f"not valid UTF-8 (byte 0x{ord(m.group()) - 0xDC00:02x} at column {m.start() + 1})"


def has_lone_surrogate(obj: Any) -> bool:
    """Whether any string (key or value) in a parsed JSON value holds half of a UTF-16 surrogate pair."""
    stack = [obj]
    while stack:
        x = stack.pop()
        if isinstance(x, str):
            if _SURROGATE.search(x):
                return True
        elif isinstance(x, dict):
            stack.extend(x.keys())
            stack.extend(x.values())
        elif isinstance(x, list):
            stack.extend(x)
    return False


def check_decoded(text: str, obj: Any) -> None:
    """Raise BadRow when ``obj`` (parsed from ``text``) holds a lone surrogate escape."""
    if _SURROGATE_ESCAPE.search(text) and has_lone_surrogate(obj):
        raise BadRow("invalid unicode: a lone surrogate escape such as \\ud800 (half of a UTF-16 pair, which no "
                     "UTF-8 file can hold)")


def depth(obj: Any) -> int:
    """How deeply lists and objects nest in a parsed JSON value (a scalar is 0), without recursion."""
    deepest, stack = 0, [(obj, 0)]
    while stack:
        x, d = stack.pop()
        if isinstance(x, dict | list):
            deepest = max(deepest, d + 1)
            stack.extend((v, d + 1) for v in (x.values() if isinstance(x, dict) else x))
    return deepest


def parse_row(text: str, max_depth: int | None = None) -> Any:
    """One JSON value from one line; BadRow (with the reason) for anything that is not a usable row.

    ``max_depth`` bounds the nesting for rows that go on to code that recurses (pickling to a worker process fails
    well below the json module's own limit)."""
    reason = bad_bytes(text)
    if reason is not None:
        raise BadRow(reason)
    try:
        obj = json.loads(text)
    except json.JSONDecodeError as e:
        raise BadRow(f"invalid JSON: {e.msg} at column {e.colno}") from None
    except RecursionError:
        raise BadRow(NESTED) from None
    except ValueError as e:  # e.g. an integer longer than sys.get_int_max_str_digits()
        raise BadRow(f"invalid JSON: {e}") from None
    check_decoded(text, obj)
    if max_depth is not None and depth(obj) > max_depth:
        raise BadRow(f"nested more than {max_depth} levels deep (lists and objects)")
    return obj



def end_of_value(text: str, pos: int) -> int | None:
    """Where the JSON value starting at ``pos`` ends (brackets and strings matched, nothing parsed), so that a reader
    can skip a value the parser could not take; None when the text ends first."""
    depth = 0
    i, n = pos, len(text)
    while i < n:
        c = text[i]
        if c == '"':
            m = _STRING.match(text, i)
            if m is None:
                return None
            i = m.end()
            if depth == 0:
                return i
            continue
        if c in "[{":
            depth += 1
        elif c in "]}":
            if depth == 0:
                return i  # a bare value ended at its list's closing bracket
            depth -= 1
            if depth == 0:
                return i + 1
        elif c == "," and depth == 0:
            return i
        i += 1
    return None
