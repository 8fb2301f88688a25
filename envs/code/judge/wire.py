"""Length-prefixed JSON frames on pipes and sockets between the judge, the launcher and the candidate's worker."""

import json
import os
import select
import struct

MAX_FRAME = 32 << 20


def send_frame(fd, obj):
    data = json.dumps(obj).encode()
    if len(data) > MAX_FRAME:
        raise ValueError(f"a message of {len(data)} bytes is over the {MAX_FRAME}-byte limit")
    view = memoryview(struct.pack(">I", len(data)) + data)
    while view:
        view = view[os.write(fd, view):]


def read_exact(fd, n):
    buf = bytearray()
    while len(buf) < n:
        select.select([fd], [], [])  # interrupted by the judge's per-test alarm when the other side hangs
        chunk = os.read(fd, min(n - len(buf), 1 << 20))
        if not chunk:
            raise EOFError("pipe closed")
        buf += chunk
    return bytes(buf)


def recv_frame(fd):
    (size,) = struct.unpack(">I", read_exact(fd, 4))
    if size > MAX_FRAME:
        raise ValueError(f"a message of {size} bytes is over the {MAX_FRAME}-byte limit")
    return json.loads(read_exact(fd, size))


def describe(exc):
    """``Type: message`` of an exception, safe for any exception object (its __str__ may itself fail)."""
    try:
        text = f"{type(exc).__name__}: {exc}"
    except BaseException:
        text = type(exc).__name__
    return text[:500]
