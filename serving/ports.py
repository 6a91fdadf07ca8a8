"""A free TCP port that stays free until the listener that asked for it binds it.

A port from ``bind(("127.0.0.1", 0))`` comes from the kernel's ephemeral range, where
every outgoing connection takes its local port too. When the listener binds seconds
later (Ray starts HAProxy several seconds after its stats and metrics ports are chosen,
opening hundreds of connections meanwhile), one of those connections may hold it, and
HAProxy exits with "Address already in use". Ports below the ephemeral range and above
Ray's worker ports are taken only by listeners, so a port free there now stays free
unless another listener is started on it.
"""

from __future__ import annotations

import random
import socket
from pathlib import Path

#: Ray's default worker ports end at 19999 (``--max-worker-port``); ours start above them.
LOWEST = 20000
_EPHEMERAL_RANGE = Path("/proc/sys/net/ipv4/ip_local_port_range")
#: Linux's default when the range cannot be read.
_DEFAULT_EPHEMERAL_START = 32768


def ephemeral_start() -> int:
    """The first port of the kernel's ephemeral range (Linux's default if unknown)."""
    try:
        return int(_EPHEMERAL_RANGE.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return _DEFAULT_EPHEMERAL_START


def free_port(host: str = "127.0.0.1", attempts: int = 200) -> int:
    """A port nothing listens on at ``host``, from below the ephemeral range when it can.

    Raises
    ------
    OSError
        No free port was found in ``attempts`` tries.
    """
    high = ephemeral_start() - 1
    candidates = (random.sample(range(LOWEST, high + 1), min(attempts, high + 1 - LOWEST))
                  if high > LOWEST else [])
    for port in [*candidates, 0]:
        with socket.socket() as sock:
            try:
                sock.bind((host, port))
            except OSError:
                continue
            return int(sock.getsockname()[1])
    raise OSError(f"no free TCP port on {host}")
