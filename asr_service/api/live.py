"""Live transcription sessions over WebSocket: the routes' blueprint and admission.

The API only relays (live_session.py): client audio into the session's input stream, the
worker's events back in the client's protocol (realtime.py: OpenAI's Realtime; funasr_ws.py:
FunASR's runtime protocol). Admission happens before the upgrade, so a refused client gets an
HTTP problem at the handshake: too many sessions for its key (429), no worker with room for
the model (503). After it, bad input gets the protocol's error and the session goes on; a
frame over MAX_FRAME_BYTES, a client far ahead of real time, one that stops reading or sends
nothing for LIVE_IDLE_S is told why and closed. No other session is touched.
"""

from __future__ import annotations

import logging
import uuid
from typing import Any

from flask import Blueprint, current_app, g, request
from flask_sock import Sock

from asr_service import redis_conn
from asr_service.api import access, services
from asr_service.api.live_session import Live, Relay
from asr_service.api.problems import problem
from asr_service.dispatch import send_live
from asr_service.live.relay import LiveStore

log = logging.getLogger(__name__)

MAX_FRAME_BYTES = 1 << 20
"""Largest WebSocket message (base64 of ~0.5 MiB of PCM, ~11 s at 24 kHz); a bigger one closes
the socket (1009)."""

bp = Blueprint("live", __name__)
sock = Sock()


def _live_store() -> LiveStore:
    """One Redis pool for live sessions per app: their blocking reads never take a connection
    the REST endpoints wait for."""
    ext = current_app.extensions
    if "asr_live" not in ext:
        client = redis_conn.client(services().settings, socket_timeout=5,
                                   socket_connect_timeout=2, socket_keepalive=True)
        ext["asr_live"] = LiveStore(client, services().store.keys)
    return ext["asr_live"]


@bp.before_request
def admit() -> Any:
    """Refuse before the upgrade (a plain request never gets here: problems.py answers 426):
    a wrong intent, too many sessions for this key, or no worker with room. An admitted
    session is registered in Redis and in g."""
    if request.path.startswith("/v1/") and request.args.get("intent",
                                                            "transcription") != "transcription":
        return problem(400, "Bad Request", "only transcription sessions are served: connect "
                       "with ?intent=transcription", slug="invalid_request_error")
    settings, models = services().settings, services().jobs.models()
    # OpenAI clients name their own models: an unknown name means the default one.
    served = request.args.get("model") if request.args.get("model") in models else None
    queue = models[served][0] if served else settings.queue_name
    owner, store = access.owner_id() or "anonymous", _live_store()
    session = Live(id=f"sess_{uuid.uuid4().hex[:20]}", owner=owner, queue=queue,
                   model=served or settings.model_id, store=store)
    if not store.open(session.id, owner, settings.live_max_sessions_per_key,
                      {"model": session.model, "queue": queue}):
        store.count("refused_limit")
        limit = settings.live_max_sessions_per_key
        return problem(429, "Too Many Requests", f"this key has {limit} live sessions open "
                       "(LIVE_MAX_SESSIONS_PER_KEY)", slug="rate_limit_exceeded",
                       headers={"Retry-After": "5"})
    ready = [w for w in services().cluster.workers() if w.queue == queue and w.engines_ready]
    if not ready or sum(max(0, w.concurrency - w.active) for w in ready) <= 0:
        store.close(session.id, owner)
        store.count("refused_no_worker")
        return problem(503, "Service Unavailable", "no worker has room for a live session of "
                       "this model now; try again later", slug="no-live-capacity",
                       headers={"Retry-After": "5"})
    g.live = session
    return None


@bp.teardown_request
def _release(_: BaseException | None) -> None:
    session: Live | None = g.pop("live", None)
    if session is not None:
        try:
            session.store.close(session.id, session.owner)
        except Exception as exc:  # Redis away: the session's keys expire on their own
            log.warning("live session not closed in Redis: %s", exc)


def start(relay_class: type[Relay], ws: Any) -> None:
    """Run the admitted session of this request with `relay_class`'s protocol."""
    session: Live = g.live
    settings = services().settings
    session.store.count("opened")
    send_live(services().celery, session.id, session.queue, settings.live_max_session_s)
    relay_class(ws, session, services().celery, settings.live_max_session_s,
                settings.live_idle_s, settings.live_buffer_s).run()



def init_app(app: Any) -> None:
    """The WebSocket routes (flask-sock on simple-websocket: a greenlet per socket under
    gunicorn's gevent worker) of both protocols."""
    from asr_service.api import funasr_ws, realtime  # noqa: F401  (their routes join bp)

    # A browser offers `realtime` (and its key, access.KEY_SUBPROTOCOL): it must hear one back.
    app.config["SOCK_SERVER_OPTIONS"] = {"max_message_size": MAX_FRAME_BYTES,
                                         "ping_interval": 25, "subprotocols": ["realtime"]}
    sock.init_app(app)
    app.register_blueprint(bp)
