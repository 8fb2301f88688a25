"""Length-prefixed JSON frames on pipes and sockets between the judge, the launcher and the candidate's worker."""

import json
import os
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
    """Blocking reads; the judge's per-test alarm interrupts them (its handler raises) when the other side hangs."""
    buf = bytearray()
    while len(buf) < n:
        chunk = os.read(fd, min(n - len(buf), 1 << 20))
        if not chunk:
            raise EOFError("pipe closed")
        buf += chunk
    return bytes(buf)


def recv_frame(fd):
    """One message. Each side sends one and waits for the answer, so a first read of up to 64 KiB cannot take in
    any of the next one (a peer that sends more than it was asked for is out of step: ValueError)."""
    data = os.read(fd, 1 << 16)
    if not data:
        raise EOFError("pipe closed")
    if len(data) < 4:
        data += read_exact(fd, 4 - len(data))
    (size,) = struct.unpack(">I", data[:4])
    if size > MAX_FRAME:
        raise ValueError(f"a message of {size} bytes is over the {MAX_FRAME}-byte limit")
    body = data[4:]
    if len(body) > size:
        raise ValueError("more than one message at once")
    if len(body) < size:
        body += read_exact(fd, size - len(body))
    return json.loads(body)


def describe(exc):
    """``Type: message`` of an exception, safe for any exception object (its __str__ may itself fail)."""
    try:
        text = f"{type(exc).__name__}: {exc}"
    except BaseException:
        text = type(exc).__name__
    return text[:500]
