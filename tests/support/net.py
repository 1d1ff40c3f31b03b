"""Loopback ports for the servers tests start themselves."""

from __future__ import annotations

import socket

from giftmarket_local.processes import port_open as _port_open


def free_port() -> int:
    """A port the kernel has just handed out on 127.0.0.1 and nobody holds now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def port_open(port: int) -> bool:
    """Whether something accepts connections on 127.0.0.1:port."""
    return _port_open("127.0.0.1", port)
