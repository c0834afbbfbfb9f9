"""A webhook receiver to try callback_url with: verifies each POST and prints its event.

    WEBHOOK_SECRET=whsec_... .venv/bin/python scripts/webhook_receiver.py [--port 9000]

Listens on 127.0.0.1 only. The verification is the part to copy into a real receiver: the
`standardwebhooks` library checks the signature over id.timestamp.body with the shared secret
and refuses timestamps older than 5 minutes (a captured request cannot be replayed).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from http.server import BaseHTTPRequestHandler, HTTPServer

from standardwebhooks.webhooks import Webhook, WebhookVerificationError


def verify(body: bytes, headers: dict[str, str], secret: str) -> dict:
    """The event, if the POST was signed with `secret`; raises WebhookVerificationError."""
    return Webhook(secret).verify(body, headers)


class Receiver(BaseHTTPRequestHandler):
    """Answers 204 to a verified webhook, 400 to anything else."""

    secret = ""

    def do_POST(self) -> None:  # noqa: N802 (http.server's naming)
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        try:
            event = verify(body, dict(self.headers.items()), self.secret)
        except WebhookVerificationError as exc:
            print(f"refused: {exc}", flush=True)
            self.send_response(400)
        else:
            print(json.dumps({"webhook-id": self.headers["webhook-id"], **event}), flush=True)
            self.send_response(204)
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


def main() -> int:
    """Serve until interrupted."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=9000)
    args = parser.parse_args()
    Receiver.secret = os.environ.get("WEBHOOK_SECRET", "")
    if not Receiver.secret:
        print("set WEBHOOK_SECRET to the service's secret", file=sys.stderr)
        return 2
    print(f"listening on http://127.0.0.1:{args.port}/", flush=True)
    try:
        HTTPServer(("127.0.0.1", args.port), Receiver).serve_forever()
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
