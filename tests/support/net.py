"""Loopback ports for the servers tests start themselves."""

from __future__ import annotations

import random
import socket

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
