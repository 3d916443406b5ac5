"""The listening socket `longjobs serve` binds itself."""

from __future__ import annotations

import socket

import click
import pytest

from longjobs.cli import _bind


def test_the_listening_socket_is_tcp_so_connections_get_nodelay() -> None:
    # asyncio sets TCP_NODELAY only on sockets whose proto is IPPROTO_TCP; without it every
    # small answer waits for a delayed ACK (~40 ms).
    sock = _bind("127.0.0.1", 0)
    try:
        assert sock.proto == socket.IPPROTO_TCP
        assert sock.getsockname()[1] > 0
    finally:
        sock.close()


def test_a_port_in_use_is_one_clear_error() -> None:
    taken = _bind("127.0.0.1", 0)
    taken.listen()  # as a running server's socket is
    try:
        with pytest.raises(click.ClickException, match=r"cannot serve on 127\.0\.0\.1:\d+"):
            _bind("127.0.0.1", taken.getsockname()[1]).close()
    finally:
        taken.close()
