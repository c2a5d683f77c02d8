"""A TCP proxy a test can cut, stall and restore, to take a server away without stopping it."""

from __future__ import annotations

import contextlib
import socket
import threading

from tests.conftest import free_port


class TcpProxy:
    """Forwards 127.0.0.1:<port> to a target.

    `cut()` drops every connection and refuses new ones (a partition with resets, a restart);
    `stall()` keeps every socket open and accepts new ones but forwards nothing (a silent
    partition: packets dropped, nobody told). `restore()` ends either; after a stall, what was
    held back is delivered late, as TCP retransmission would after the network heals.
    """

    def __init__(self, target_host: str, target_port: int):
        self.target = (target_host, target_port)
        self.port = free_port()
        self._listener: socket.socket | None = None
        self._sockets: set[socket.socket] = set()
        self._lock = threading.Lock()
        self._flowing = threading.Event()
        self._flowing.set()

    def start(self) -> None:
        listener = socket.create_server(("127.0.0.1", self.port))
        self._listener = listener
        threading.Thread(target=self._accept, args=(listener,), daemon=True).start()

    def cut(self) -> None:
        """Like a network partition with connection resets: existing and new connections fail."""
        listener, self._listener = self._listener, None
        if listener is not None:
            with contextlib.suppress(OSError):
                listener.shutdown(socket.SHUT_RDWR)  # wakes the accept() blocked in the other thread
            listener.close()
        with self._lock:
            for sock in list(self._sockets):
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)
                sock.close()
            self._sockets.clear()
        self._flowing.set()

    def stall(self) -> None:
        """Like a silent partition: connections stay open, nothing gets through either way."""
        self._flowing.clear()

    @property
    def stalled(self) -> bool:
        return not self._flowing.is_set()

    def restore(self) -> None:
        if self._listener is None:
            self.start()
        self._flowing.set()

    def stop(self) -> None:
        self.cut()

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return
            threading.Thread(target=self._connect, args=(client,), daemon=True).start()

    def _connect(self, client: socket.socket) -> None:
        # While stalled, a new connection is accepted (the kernel completes the handshake) but
        # reaches nothing: the client waits for a greeting, as it would for a SYN that is dropped.
        self._flowing.wait()
        try:
            upstream = socket.create_connection(self.target, timeout=5)
            upstream.settimeout(None)
        except OSError:
            client.close()
            return
        with self._lock:
            self._sockets.update({client, upstream})
        for a, b in ((client, upstream), (upstream, client)):
            threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()

    def _pipe(self, source: socket.socket, sink: socket.socket) -> None:
        try:
            while data := source.recv(65536):
                self._flowing.wait()  # held here while stalled; delivered late on restore
                sink.sendall(data)
        except OSError:
            pass
        finally:
            self._flowing.wait()  # a close is news that a silent partition does not carry either
            for sock in (source, sink):
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)
