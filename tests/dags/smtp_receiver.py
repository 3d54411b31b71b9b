"""A minimal SMTP server for the alert tests (the standard library has no server since 3.12,
and ``aiosmtpd`` is not a dependency): accepts every message on 127.0.0.1 and keeps it."""

from __future__ import annotations

import email
import email.policy
import socketserver
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from email.message import EmailMessage


class _Session(socketserver.StreamRequestHandler):
    def handle(self) -> None:
        self._reply("220 test-smtp ready")
        while line := self.rfile.readline():
            verb = line.decode().strip().split(" ", 1)[0].upper()
            if verb in ("EHLO", "HELO"):
                self._reply("250 test-smtp")
            elif verb in ("MAIL", "RCPT", "RSET", "NOOP"):
                self._reply("250 OK")
            elif verb == "DATA":
                self._reply("354 end with <CRLF>.<CRLF>")
                lines = []
                while (part := self.rfile.readline()) not in (b".\r\n", b".\n", b""):
                    lines.append(part[1:] if part.startswith(b"..") else part)
                self.server.messages.append(  # type: ignore[attr-defined]
                    email.message_from_bytes(b"".join(lines), policy=email.policy.default)
                )
                self._reply("250 queued")
            elif verb == "QUIT":
                self._reply("221 bye")
                return
            else:
                self._reply("502 not implemented")

    def _reply(self, text: str) -> None:
        self.wfile.write(text.encode() + b"\r\n")


@contextmanager
def smtp_server() -> Iterator[tuple[int, list[EmailMessage]]]:
    """(port, messages received so far) while the server runs."""
    server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), _Session)
    server.daemon_threads = True
    server.messages = []  # type: ignore[attr-defined]
    thread = threading.Thread(target=server.serve_forever, name="test-smtp", daemon=True)
    thread.start()
    try:
        yield server.server_address[1], server.messages  # type: ignore[attr-defined]
    finally:
        server.shutdown()
        server.server_close()
