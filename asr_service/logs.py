"""JSON-lines operational logs per component and the events.jsonl business log."""

from __future__ import annotations

import json
import logging
import os
import sys
import time
from pathlib import Path
from typing import Any

from concurrent_log_handler import ConcurrentRotatingFileHandler

from asr_service.settings import Settings

EVENTS_LOGGER = "asr.events"
_STANDARD = set(vars(logging.makeLogRecord({}))) | {"message", "asctime"}


class JsonFormatter(logging.Formatter):
    """One JSON object per line: ts, level, logger, event, then any extra fields."""

    def __init__(self, component: str) -> None:
        super().__init__()
        self.component = component

    def format(self, record: logging.LogRecord) -> str:
        """Render the record; extra= fields become top-level keys."""
        entry: dict[str, Any] = {
            "ts": round(record.created, 3),
            "level": record.levelname.lower(),
            "component": self.component,
            "logger": record.name,
            "event": record.getMessage(),
            "pid": record.process,
        }
        entry.update({k: v for k, v in vars(record).items() if k not in _STANDARD})
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str, ensure_ascii=False)


def setup_logging(component: str, settings: Settings) -> None:
    """Send logs as JSON lines to stdout and a rotating <log_dir>/<component>.log."""
    log_dir = Path(settings.log_dir)
    log_dir.mkdir(parents=True, exist_ok=True)
    formatter = JsonFormatter(component)
    stdout = logging.StreamHandler(sys.stdout)
    # Several processes (gunicorn workers, Celery children) share one file: this handler
    # takes a lock around rotation, which the standard RotatingFileHandler does not.
    rotating = ConcurrentRotatingFileHandler(
        str(log_dir / f"{component}.log"), maxBytes=20 * 1024 * 1024, backupCount=5
    )
    root = logging.getLogger()
    _close_handlers(root)
    for handler in (stdout, rotating):
        handler.setFormatter(formatter)
        root.addHandler(handler)
    root.setLevel(settings.log_level)

    events = logging.getLogger(EVENTS_LOGGER)
    _close_handlers(events)
    events.propagate = False
    events.setLevel(logging.INFO)
    business = ConcurrentRotatingFileHandler(
        str(log_dir / "events.jsonl"), maxBytes=50 * 1024 * 1024, backupCount=5
    )
    business.setFormatter(logging.Formatter("%(message)s"))
    events.addHandler(business)


def _close_handlers(logger: logging.Logger) -> None:
    """Remove and close a logger's handlers (a set-up-again process must not leak their files)."""
    for handler in logger.handlers[:]:
        logger.removeHandler(handler)
        handler.close()


def log_event(event: str, job_id: str, **fields: Any) -> None:
    """Append one job lifecycle event (noun.past_verb) to events.jsonl; never audio or secrets."""
    entry = {"ts": round(time.time(), 3), "event": event, "job_id": job_id, "pid": os.getpid()}
    entry.update({k: v for k, v in fields.items() if v is not None})
    logging.getLogger(EVENTS_LOGGER).info(json.dumps(entry, default=str, ensure_ascii=False))
