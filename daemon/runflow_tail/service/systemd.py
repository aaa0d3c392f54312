"""The systemd notify protocol (sd_notify): READY, STATUS, WATCHDOG, STOPPING.

A datagram to the AF_UNIX socket named by $NOTIFY_SOCKET; a name starting with "@" is an
abstract socket. Failures are logged once and otherwise ignored: notifying systemd must
never take the daemon down.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Mapping

from runflow_tail.observability import get_logger

log = get_logger(__name__)


class SystemdNotifier:
    def __init__(self, address: str | None, watchdog_usec: int | None = None) -> None:
        self._address = address
        self.watchdog_interval = watchdog_usec / 1e6 if watchdog_usec else None
        self._warned = False

    @classmethod
    def from_environ(cls, environ: Mapping[str, str]) -> SystemdNotifier:
        watchdog = environ.get("WATCHDOG_USEC", "")
        watchdog_pid = environ.get("WATCHDOG_PID", "")
        # WATCHDOG_PID, when set, names the process systemd expects pings from.
        mine = not watchdog_pid or watchdog_pid == str(os.getpid())
        usec = int(watchdog) if watchdog.isdigit() and mine else None
        return cls(environ.get("NOTIFY_SOCKET") or None, usec)

    @property
    def enabled(self) -> bool:
        return self._address is not None

    def notify(self, *assignments: str) -> bool:
        if self._address is None:
            return False
        address = self._address
        if address.startswith("@"):
            address = "\0" + address[1:]
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
                sock.connect(address)
                sock.sendall("\n".join(assignments).encode())
        except OSError as exc:
            if not self._warned:
                log.warning("systemd.notify_failed", socket=self._address, error=str(exc))
                self._warned = True
            return False
        return True

    def ready(self, status: str) -> bool:
        return self.notify("READY=1", f"STATUS={status}")

    def status(self, status: str) -> bool:
        return self.notify(f"STATUS={status}")

    def watchdog(self) -> bool:
        return self.notify("WATCHDOG=1")

    def stopping(self) -> bool:
        return self.notify("STOPPING=1", "STATUS=stopping")
