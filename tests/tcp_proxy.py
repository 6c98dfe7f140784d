"""A TCP proxy on loopback that a test can cut or black-hole: the network between us and a server.

The integration and end-to-end tests put it between a client (publisher,
consumer, beat, worker) and the real PostgreSQL or RabbitMQ and ``cut()`` it;
the soak (``tests/soak``) also ``stall()``s it. Nothing here fakes a server:
the bytes are the real ones.
"""

from __future__ import annotations

import contextlib
import select
import socket
import threading
from urllib.parse import urlsplit, urlunsplit

Pair = tuple[socket.socket, socket.socket]


class TcpProxy:
    """Forwards 127.0.0.1:<port> to ``target``, until told otherwise.

    - ``cut()`` drops every forwarded connection and refuses new ones (the
      listening socket is closed): what a reset or a server gone looks like,
      noticed at once. ``restore()`` listens again on the same port.
    - ``stall()`` keeps every connection open and silent, and new ones are
      accepted and stall too: what a dead NAT entry, a lost route or a frozen
      peer look like, noticed only by timeouts and heartbeats. ``resume()`` lets
      the bytes queued meanwhile flow again. What it cannot show is a peer gone
      for good: the proxy's kernel still acknowledges data and keepalive probes,
      so only a real network fault (packets dropped) exercises TCP keepalives.
    """

    def __init__(self, target_host: str = "127.0.0.1", target_port: int = 5672) -> None:
        self.target = (target_host, target_port)
        self._lock = threading.Lock()
        self._pairs: list[Pair] = []
        self._threads: list[threading.Thread] = []
        self._listener: socket.socket | None = None
        self._flowing = threading.Event()
        self._flowing.set()
        self.port = 0
        self._listen()

    # -- faults --------------------------------------------------------------------

    def cut(self) -> None:
        """Drop every forwarded connection and stop accepting new ones."""
        with self._lock:
            listener, self._listener = self._listener, None
            pairs, self._pairs = self._pairs, []
        if listener is not None:
            _close(listener)
        for client, upstream in pairs:
            _close(client)
            _close(upstream)

    def restore(self) -> None:
        """Accept connections again, on the same port."""
        with self._lock:
            if self._listener is not None:
                return
        self._listen()

    def stall(self) -> None:
        """Hold every byte, both ways, on every connection (open ones and new ones)."""
        self._flowing.clear()

    def resume(self) -> None:
        """Let bytes flow again, those held first."""
        self._flowing.set()

    def close(self) -> None:
        self.cut()
        for thread in self._threads:
            thread.join(timeout=5)

    @property
    def connections(self) -> int:
        with self._lock:
            return len(self._pairs)

    # -- forwarding ----------------------------------------------------------------

    def _listen(self) -> None:
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", self.port))
        listener.listen(16)
        self.port = listener.getsockname()[1]
        self._listener = listener
        thread = threading.Thread(target=self._accept, args=(listener,), daemon=True)
        thread.start()
        self._threads.append(thread)

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return  # the listener was closed by cut()
            try:
                upstream = socket.create_connection(self.target, timeout=5)
                upstream.settimeout(None)
            except OSError:
                _close(client)
                continue
            with self._lock:
                if self._listener is not listener:
                    _close(client)
                    _close(upstream)
                    return
                self._pairs.append((client, upstream))
            thread = threading.Thread(target=self._pump, args=(client, upstream), daemon=True)
            thread.start()
            self._threads.append(thread)

    def _alive(self, pair: Pair) -> bool:
        with self._lock:
            return pair in self._pairs

    def _pump(self, client: socket.socket, upstream: socket.socket) -> None:
        pair = (client, upstream)
        peers = {client: upstream, upstream: client}
        try:
            while True:
                # Stalled: read nothing, so the bytes wait in the kernel's buffers
                # (and the senders' windows fill), but still notice a cut.
                if not self._flowing.wait(0.2):
                    if not self._alive(pair):
                        return
                    continue
                readable, _, _ = select.select(list(peers), [], [], 0.2)
                if not self._alive(pair):
                    return
                for sock in readable:
                    if not self._flowing.is_set():
                        break  # a stall began during the select: hold these bytes too
                    data = sock.recv(65536)
                    if not data:
                        return
                    peers[sock].sendall(data)
        except (OSError, ValueError):
            return
        finally:
            with self._lock:
                if pair in self._pairs:
                    self._pairs.remove(pair)
            _close(client)
            _close(upstream)


def _close(sock: socket.socket) -> None:
    with contextlib.suppress(OSError):
        sock.shutdown(socket.SHUT_RDWR)
    with contextlib.suppress(OSError):
        sock.close()


def through(url: str, port: int) -> str:
    """``url`` (``scheme://user:password@host:port/...``) sent to the proxy on ``port`` instead."""
    parts = urlsplit(url)
    userinfo, _, _hostport = parts.netloc.rpartition("@")
    return urlunsplit(parts._replace(netloc=f"{userinfo}@127.0.0.1:{port}"))
