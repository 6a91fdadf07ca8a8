"""serving.ports: ports chosen for listeners started later lie outside the ephemeral range."""

from __future__ import annotations

import socket

from serving.ports import LOWEST, ephemeral_start, free_port


def test_a_free_port_lies_below_the_ephemeral_range_and_can_be_bound():
    ports = {free_port() for _ in range(20)}
    assert all(LOWEST <= port < ephemeral_start() for port in ports), ports
    assert len(ports) > 1, "ports are drawn at random, not always the same one"
    port = ports.pop()
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", port))


def test_a_port_in_use_is_not_chosen(monkeypatch):
    with socket.socket() as held:
        held.bind(("127.0.0.1", LOWEST))
        held.listen(1)
        monkeypatch.setattr("serving.ports.random.sample", lambda population, k: [LOWEST, LOWEST + 1])
        assert free_port() == LOWEST + 1
