"""systemd's notify protocol: READY=1, RELOADING=1, STOPPING=1 and WATCHDOG=1 over $NOTIFY_SOCKET."""

from __future__ import annotations

import socket


class Notifier:
    """Sends datagrams to the socket systemd gave us; does nothing when there is none."""

    def __init__(self, address: str | None) -> None:
        self._address: str | None = None
        if address:
            # A leading '@' names a socket in the abstract namespace.
            self._address = "\0" + address[1:] if address.startswith("@") else address

    @property
    def enabled(self) -> bool:
        return self._address is not None

    def notify(self, *assignments: str) -> bool:
        if self._address is None:
            return False
        message = "\n".join(assignments).encode()
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
                sock.sendto(message, self._address)
            return True
        except OSError:
            return False
