"""`serve`'s listening sockets: one per API process on one port, connections spread between
them by the kernel, and a port already served still refused."""

from __future__ import annotations

import socket
import sys

import click
import pytest

from superscale.cli.serve import listening_sockets


def _accepted(sock: socket.socket) -> int:
    sock.setblocking(False)
    count = 0
    while True:
        try:
            conn, _ = sock.accept()
        except BlockingIOError:
            return count
        conn.close()
        count += 1


@pytest.mark.skipif(not hasattr(socket, "SO_REUSEPORT"), reason="no SO_REUSEPORT here")
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="Linux spreads connections")
def test_each_api_process_gets_its_own_socket_and_a_share_of_the_connections() -> None:
    sockets = listening_sockets("127.0.0.1", 0, 2)
    try:
        assert len({id(s) for s in sockets}) == 2
        port = sockets[0].getsockname()[1]
        assert sockets[1].getsockname()[1] == port
        clients = [socket.create_connection(("127.0.0.1", port)) for _ in range(64)]
        counts = [_accepted(s) for s in sockets]
        for client in clients:
            client.close()
        # Spread by a hash of each connection's addresses: all 64 on one side is a 2**-63 chance.
        assert sum(counts) == 64 and min(counts) > 0, counts
    finally:
        for sock in sockets:
            sock.close()


@pytest.mark.parametrize("count", [1, 2])
def test_a_port_in_use_is_refused_even_by_sockets_made_to_share_it(count: int) -> None:
    held = listening_sockets("127.0.0.1", 0, 2)  # a serve with two API processes, sharing its port
    port = held[0].getsockname()[1]
    try:
        with pytest.raises(click.ClickException, match="cannot listen"):
            listening_sockets("127.0.0.1", port, count)
    finally:
        for sock in held:
            sock.close()


@pytest.mark.skipif(not hasattr(socket, "SO_REUSEPORT"), reason="no SO_REUSEPORT here")
def test_one_api_process_listens_on_one_plain_socket() -> None:
    (sock,) = listening_sockets("127.0.0.1", 0, 1)
    try:
        assert sock.getsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT) == 0
    finally:
        sock.close()
