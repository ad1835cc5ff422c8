"""The per-worker listeners of kit.serving (Linux: SO_REUSEPORT)."""

from __future__ import annotations

import socket
import sys
from multiprocessing.reduction import ForkingPickler

import pytest

from b2bscore.kit.serving import _PortReservation, port_is_free, reuse_port_socket
from tests.servers import free_port

pytestmark = pytest.mark.skipif(sys.platform != "linux", reason="SO_REUSEPORT balancing is Linux")


def test_a_worker_unpickles_a_listener_of_its_own_on_the_same_port() -> None:
    port = free_port()
    reservation = _PortReservation("127.0.0.1", port)
    try:
        # What uvicorn's supervisor does to hand its sockets to each spawned worker.
        worker_socket = ForkingPickler.loads(bytes(ForkingPickler.dumps([reservation])))[0]
        try:
            assert type(worker_socket) is socket.socket
            assert worker_socket.fileno() != reservation.fileno()
            assert worker_socket.getsockname() == ("127.0.0.1", port)
            assert worker_socket.getsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT) == 1
        finally:
            worker_socket.close()
    finally:
        reservation.close()


def test_the_reservation_never_takes_a_connection() -> None:
    port = free_port()
    reservation = _PortReservation("127.0.0.1", port)
    try:
        with pytest.raises(ConnectionRefusedError):
            socket.create_connection(("127.0.0.1", port), timeout=2)
        listener = reuse_port_socket("127.0.0.1", port)  # a worker's: it does listen
        listener.listen()
        try:
            socket.create_connection(("127.0.0.1", port), timeout=2).close()
        finally:
            listener.close()
    finally:
        reservation.close()


def test_a_port_someone_listens_on_is_not_free() -> None:
    port = free_port()
    assert port_is_free("127.0.0.1", port)
    # Another instance's worker: it joined the port's SO_REUSEPORT group, this one must not.
    other = reuse_port_socket("127.0.0.1", port)
    other.listen()
    try:
        assert not port_is_free("127.0.0.1", port)
    finally:
        other.close()
