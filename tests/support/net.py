"""Loopback ports for the servers tests start themselves."""

from __future__ import annotations

import contextlib
import random
import socket
import threading
from collections.abc import Iterator

from giftmarket_local.processes import port_open as _port_open

# Below the kernel's ephemeral range (32768 and up), where outgoing connections take their
# local ports: a server listening there can find its port taken ("address already in use").
# Above the stacks' fixed ports (the test profile's highest is 29400).
_SERVER_PORTS = range(30000, 32768)
_handed_out: set[int] = set()  # never the same port twice to one process's tests


def free_port() -> int:
    """A port below the ephemeral range that nobody holds on 127.0.0.1 now."""
    for port in random.sample(_SERVER_PORTS, 200):
        if port in _handed_out:
            continue
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
        _handed_out.add(port)
        return port
    raise RuntimeError(f"no free port in {_SERVER_PORTS}")


def port_open(port: int) -> bool:
    """Whether something accepts connections on 127.0.0.1:port."""
    return _port_open("127.0.0.1", port)


@contextlib.contextmanager
def silent_server() -> Iterator[tuple[int, list[socket.socket]]]:
    """A port that takes connections and never answers a byte: a store hung, or a node
    being replaced behind its address. Yields the port and the connections it took."""
    server = socket.create_server(("127.0.0.1", free_port()), backlog=64)
    taken: list[socket.socket] = []

    def accept() -> None:
        with contextlib.suppress(OSError):  # the server closed: the test is over
            while True:
                taken.append(server.accept()[0])

    threading.Thread(target=accept, daemon=True).start()
    try:
        yield server.getsockname()[1], taken
    finally:
        server.close()
        for conn in taken:
            conn.close()
