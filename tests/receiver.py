"""A real webhook receiver for the tests: an HTTP server on 127.0.0.1 that verifies
every request's Standard Webhooks signature with the library and records what it
got. No mock: the delivery code talks to it over TCP as it would to anyone's.

``Receiver(secret)`` starts it on a free port (``url``); ``answers`` is a list of
status codes (or ``(status, body)``) to give, in order, before it answers 200
("ok") to everything;
``stop()`` closes the socket (the receiver is "down"), ``start()`` opens it again
on the same port.
"""

import ssl
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from standardwebhooks import Webhook
from standardwebhooks.webhooks import WebhookVerificationError


class Receiver:
    def __init__(
        self,
        secret: str = "",
        *,
        answers: list[int] | None = None,
        tls: tuple[str, str] | None = None,
    ):
        self.secret = secret
        # (certificate file, key file): serve HTTPS with them.
        self.tls = tls
        # Seconds to wait before answering (a slow receiver).
        self.delay = 0.0
        self.answers = list(answers or [])
        self.lock = threading.Lock()
        # (webhook-id, status answered, parsed body) of every verified request.
        self.requests: list[tuple[str, int, dict]] = []
        # The Host header of every request.
        self.hosts: list[str] = []
        # Requests whose signature did not verify (must stay empty).
        self.unverified: list[str] = []
        self.port = 0
        self.server = None
        self.thread = None
        self.start()

    @property
    def url(self) -> str:
        scheme = "https" if self.tls else "http"
        return f"{scheme}://127.0.0.1:{self.port}/hooks/quota"

    def start(self) -> None:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                with receiver.lock:
                    receiver.hosts.append(self.headers.get("Host", ""))
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length)
                try:
                    payload = Webhook(receiver.secret).verify(body, dict(self.headers))
                except WebhookVerificationError as exc:
                    with receiver.lock:
                        receiver.unverified.append(str(exc))
                    self._answer(400)
                    return
                with receiver.lock:
                    answer = receiver.answers.pop(0) if receiver.answers else 200
                    status, text = (
                        answer if isinstance(answer, tuple) else (answer, b"ok")
                    )
                    receiver.requests.append(
                        (self.headers["webhook-id"], status, payload)
                    )
                time.sleep(receiver.delay)
                self._answer(status, text)

            def _answer(self, status: int, text: bytes = b"ok") -> None:
                self.send_response(status)
                self.send_header("Content-Length", str(len(text)))
                self.end_headers()
                self.wfile.write(text)

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        if self.tls:
            context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            context.load_cert_chain(*self.tls)
            self.server.socket = context.wrap_socket(
                self.server.socket, server_side=True
            )
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def ids(self, *, status: int | None = None) -> list[str]:
        """The webhook-ids received, in order (only those answered ``status``)."""
        with self.lock:
            return [
                webhook_id
                for webhook_id, answered, _ in self.requests
                if status is None or answered == status
            ]

    def payloads(self) -> list[dict]:
        with self.lock:
            return [payload for _, _, payload in self.requests]
