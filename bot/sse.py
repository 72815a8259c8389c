"""Server-sent events, as a model streams its answer: the bytes of each read split into
the data of each event (bot/llm.py reads the stream itself; see there why)."""

from __future__ import annotations


class SSEBuffer:
    """Splits a server-sent event stream into the data of each event, as bytes.

    Per the SSE format: events end at a blank line; lines end with LF, CRLF or CR; an
    event's data lines are joined with LF; comments, and fields other than data, are
    skipped. The usual chunk ("data: {...}\\n\\n", one event per read) takes the fast path.
    """

    __slots__ = ("after_cr", "pending")

    def __init__(self) -> None:
        self.pending = b""  # an event begun but not ended, line ends made LF
        self.after_cr = False  # the last read ended with CR: an LF first is its CRLF's

    def feed(self, data: bytes) -> list[bytes]:
        """Take the next bytes read; return the data of every event they complete."""
        if not data:
            return []
        if self.after_cr and data[:1] == b"\n":
            data = data[1:]
        self.after_cr = data[-1:] == b"\r"
        buffer = self.pending + data if self.pending else data
        if b"\r" in buffer:
            buffer = buffer.replace(b"\r\n", b"\n").replace(b"\r", b"\n")
        end = buffer.rfind(b"\n\n")
        if end < 0:
            self.pending = buffer
            return []
        self.pending = buffer[end + 2 :]
        found = []
        for event in buffer[:end].split(b"\n\n"):
            if event.startswith(b"data: ") and b"\n" not in event:
                found.append(event[6:])
                continue
            lines = [line[5:] for line in event.split(b"\n") if line.startswith(b"data:")]
            if lines:
                found.append(b"\n".join(line[1:] if line[:1] == b" " else line for line in lines))
        return found
