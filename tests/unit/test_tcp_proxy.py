"""The tests' TCP proxy (tests/tcp_proxy.py) against an echo server on loopback: no other server."""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections.abc import Iterator

import pytest

from tests.tcp_proxy import TcpProxy


@pytest.fixture
def echo_port() -> Iterator[int]:
    """A server on 127.0.0.1 that sends back whatever each connection sends it."""
    listener = socket.create_server(("127.0.0.1", 0))
    stop = threading.Event()

    def echo(conn: socket.socket) -> None:
        with conn, contextlib.suppress(OSError):
            while data := conn.recv(65536):
                conn.sendall(data)

    def serve() -> None:
        listener.settimeout(0.1)
        while not stop.is_set():
            try:
                conn, _ = listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            threading.Thread(target=echo, args=(conn,), daemon=True).start()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield listener.getsockname()[1]
    stop.set()
    thread.join(timeout=5)
    listener.close()


@pytest.fixture
def proxy(echo_port: int) -> Iterator[TcpProxy]:
    made = TcpProxy(target_port=echo_port)
    yield made
    made.close()


def _connect(proxy: TcpProxy) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", proxy.port), timeout=5)
    sock.settimeout(2)
    return sock


def _wait(predicate: object, timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():  # type: ignore[operator]
            return True
        time.sleep(0.02)
    return False


def test_bytes_go_through_both_ways(proxy: TcpProxy) -> None:
    with _connect(proxy) as sock:
        sock.sendall(b"hello")
        assert sock.recv(100) == b"hello"
        assert _wait(lambda: proxy.connections == 1)
    assert _wait(lambda: proxy.connections == 0)


def test_cut_drops_connections_and_refuses_new_ones_until_restored(proxy: TcpProxy) -> None:
    port = proxy.port
    sock = _connect(proxy)
    sock.sendall(b"a")
    assert sock.recv(10) == b"a"

    proxy.cut()
    with contextlib.suppress(ConnectionResetError):
        assert sock.recv(10) == b""  # closed under the client
    sock.close()
    assert proxy.connections == 0
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", port), timeout=2)

    proxy.restore()
    assert proxy.port == port
    with _connect(proxy) as again:
        again.sendall(b"b")
        assert again.recv(10) == b"b"


def test_stall_holds_bytes_on_open_and_new_connections_until_resumed(proxy: TcpProxy) -> None:
    old = _connect(proxy)
    old.sendall(b"1")
    assert old.recv(10) == b"1"

    proxy.stall()
    time.sleep(0.5)  # a pump mid-select finishes its round and sees the stall
    old.sendall(b"2")
    new = _connect(proxy)  # accepted while stalled: open, and silent too
    new.sendall(b"3")
    for sock in (old, new):
        sock.settimeout(0.8)
        with pytest.raises(TimeoutError):
            sock.recv(10)
    assert proxy.connections == 2  # nothing was closed

    proxy.resume()
    for sock, sent in ((old, b"2"), (new, b"3")):
        sock.settimeout(5)
        assert sock.recv(10) == sent
        sock.close()


def test_cut_during_a_stall_still_drops_everything(proxy: TcpProxy) -> None:
    sock = _connect(proxy)
    proxy.stall()
    proxy.cut()
    with contextlib.suppress(ConnectionResetError):
        assert sock.recv(10) == b""
    sock.close()
    assert _wait(lambda: proxy.connections == 0)
