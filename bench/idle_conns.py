"""Hold many idle keep-alive client connections open (a helper process of ``python -m bench``).

Run: ``.venv/bin/python bench/idle_conns.py PORT N``

Raises its own open-files limit (``resource.setrlimit``), opens ``N`` TCP connections to
``127.0.0.1:PORT`` in batches over raw non-blocking sockets, sends one ``GET /`` on each and
reads its answer head, so that every connection is a real, used keep-alive connection, then
prints ``{"opened": …, "answered": …, "errors": …}`` and keeps them idle. Each line on stdin is a
command: ``check`` prints ``{"still_open": …}`` (connections the server has not closed),
``quit`` closes them all and exits (so does end of input).
"""

from __future__ import annotations

import contextlib
import errno
import json
import resource
import selectors
import socket
import sys
import time

HOST = "127.0.0.1"
BATCH = 500
REQUEST = b"GET / HTTP/1.1\r\nHost: idle\r\n\r\n"


def raise_nofile(want: int) -> int:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = want if hard == resource.RLIM_INFINITY else min(want, hard)
    if soft < target:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def _complete(seen: bytes) -> bool:
    """A whole answer (head, and a body of its Content-Length) is in ``seen``."""
    head, sep, body = seen.partition(b"\r\n\r\n")
    if not sep:
        return False
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            return len(body) >= int(value.strip() or 0)
    return True


def open_batch(port: int, n: int, deadline_s: float) -> tuple[list[socket.socket], int, int]:
    """``n`` connections with one answered request each: (sockets, answered, errors)."""
    sel = selectors.DefaultSelector()
    socks: list[socket.socket] = []
    errors = 0
    for _ in range(n):
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.setblocking(False)
        rc = s.connect_ex((HOST, port))
        if rc not in (0, errno.EINPROGRESS):
            errors += 1
            s.close()
            continue
        socks.append(s)
        sel.register(s, selectors.EVENT_WRITE, b"")
    answered = 0
    pending = len(socks)
    end = time.monotonic() + deadline_s
    while pending and time.monotonic() < end:
        for key, ev in sel.select(timeout=0.5):
            s = key.fileobj
            assert isinstance(s, socket.socket)
            if ev & selectors.EVENT_WRITE:
                try:
                    s.sendall(REQUEST)
                except OSError:
                    errors += 1
                    pending -= 1
                    sel.unregister(s)
                    continue
                sel.modify(s, selectors.EVENT_READ, b"")
                continue
            try:
                data = s.recv(65536)
            except OSError:
                data = b""
            if not data:
                errors += 1
                pending -= 1
                sel.unregister(s)
                continue
            seen = key.data + data
            if _complete(seen):
                if seen.startswith(b"HTTP/1.1 2") or seen.startswith(b"HTTP/1.0 2"):
                    answered += 1
                else:
                    errors += 1
                pending -= 1
                sel.unregister(s)
            else:
                sel.modify(s, selectors.EVENT_READ, seen)
    errors += pending
    sel.close()
    return socks, answered, errors


def still_open(socks: list[socket.socket]) -> int:
    n = 0
    for s in socks:
        try:
            data = s.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT)
        except BlockingIOError:
            n += 1  # nothing to read and not closed: still open and idle
            continue
        except OSError:
            continue
        if data:
            n += 1  # unexpected bytes, but open
    return n


def main() -> int:
    port, n = int(sys.argv[1]), int(sys.argv[2])
    limit = raise_nofile(n + 256)
    socks: list[socket.socket] = []
    answered = errors = 0
    for start in range(0, n, BATCH):
        got, a, e = open_batch(port, min(BATCH, n - start), 20.0)
        socks += got
        answered += a
        errors += e
    print(
        json.dumps({"opened": len(socks), "answered": answered, "errors": errors, "nofile": limit}),
        flush=True,
    )
    for line in sys.stdin:
        cmd = line.strip()
        if cmd == "check":
            print(json.dumps({"still_open": still_open(socks)}), flush=True)
        elif cmd == "quit":
            break
    for s in socks:
        with contextlib.suppress(OSError):
            s.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
