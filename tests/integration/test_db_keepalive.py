"""The engine's TCP connections detect a vanished database within a minute, not two hours.

Found while building the soak's network faults: the beat's session set TCP keepalives,
the engine every worker, API and CLI use did not, so a query on a connection whose peer
vanished silently (no reset) waited on the OS default of 2 hours of silence.
"""

from __future__ import annotations

import os
import socket

from sqlalchemy import Engine

# What the detection of a dead peer may take at most: idle + interval * count.
WITHIN_SECONDS = 60


def _socket_of(engine: Engine) -> socket.socket:
    with engine.connect() as conn:
        raw = conn.connection.dbapi_connection
        assert raw is not None
        return socket.socket(fileno=os.dup(raw.fileno()))


def test_engine_connections_probe_a_silent_peer_and_give_up_within_a_minute(
    engine: Engine,
) -> None:
    sock = _socket_of(engine)
    try:
        assert sock.family == socket.AF_INET, "the test database is reached over TCP"
        assert sock.getsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE) == 1
        idle = sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE)
        interval = sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPINTVL)
        count = sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPCNT)
        assert idle + interval * count <= WITHIN_SECONDS, (idle, interval, count)
    finally:
        sock.close()
