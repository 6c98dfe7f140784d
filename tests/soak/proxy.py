"""A TCP proxy that can also black-hole its connections: open, but nothing gets through."""

from __future__ import annotations

import select
import socket
import threading

from tests.integration.helpers import TcpProxy, _close


class StallingProxy(TcpProxy):
    """:class:`TcpProxy` plus ``stall()``: every connection stays open and silent.

    A cut is noticed at once (a reset); a stall is what a dead NAT entry, a lost
    route or a frozen peer look like, noticed only by timeouts and heartbeats.
    New connections are accepted and stall too. ``resume()`` lets the bytes
    queued meanwhile flow again. What it cannot show is a peer gone for good: the
    proxy's kernel still acknowledges data and keepalive probes, so only a real
    network fault (packets dropped) exercises TCP keepalives.
    """

    def __init__(self, target_host: str = "127.0.0.1", target_port: int = 5672) -> None:
        self._flowing = threading.Event()
        self._flowing.set()
        super().__init__(target_host, target_port)

    def stall(self) -> None:
        self._flowing.clear()

    def resume(self) -> None:
        self._flowing.set()

    def _pump(self, client: socket.socket, upstream: socket.socket) -> None:
        peers = {client: upstream, upstream: client}
        try:
            while True:
                if not self._flowing.wait(0.2):
                    with self._lock:
                        if (client, upstream) not in self._pairs:
                            return
                    continue
                readable, _, _ = select.select(list(peers), [], [], 0.2)
                with self._lock:
                    alive = (client, upstream) in self._pairs
                if not alive:
                    return
                for sock in readable:
                    data = sock.recv(65536)
                    if not data:
                        return
                    peers[sock].sendall(data)
        except (OSError, ValueError):
            return
        finally:
            with self._lock:
                if (client, upstream) in self._pairs:
                    self._pairs.remove((client, upstream))
            _close(client)
            _close(upstream)
