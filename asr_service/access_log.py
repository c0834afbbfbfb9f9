"""gunicorn's access log as JSON lines built with json.dumps, whatever the request carried.

gunicorn's own access_log_format is a %-template: its SafeAtoms escape only `"`, and the path
atom is the percent-decoded PATH_INFO, so `GET /x%5C` wrote an invalid JSON line and
`GET /a%0A{...}` a forged second one. Here every atom is serialised by json.dumps (ASCII only:
a newline, a backslash or a control character in a path becomes an escape, never a break).
"""

from __future__ import annotations

import json
from typing import Any

from gunicorn import glogging


class JsonAccessLogger(glogging.Logger):
    """gunicorn's logger, with one json.dumps-built line per request in the access log."""

    def access(self, resp: Any, req: Any, environ: dict[str, Any],
               request_time: Any) -> None:
        """Log one request as {ts_local, component, method, path, status, bytes,
        duration_ms}."""
        if not self.access_log_enabled:
            return
        atoms = self.atoms(resp, req, environ, request_time)
        status = str(atoms.get("s", "-"))
        entry = {"ts_local": atoms.get("t"), "component": "api-access",
                 "method": atoms.get("m"), "path": atoms.get("U"),
                 "status": int(status) if status.isdigit() else status,
                 "bytes": atoms.get("B"), "duration_ms": atoms.get("M")}
        self.access_log.info("%s", json.dumps(entry, ensure_ascii=True, default=str))
