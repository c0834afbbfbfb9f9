"""Settings of live transcription sessions (/v1/realtime and FunASR's WebSocket protocol)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class LiveSettings:
    """Live transcription"""

    live_max_sessions_per_key: int = 4
    """Live sessions open at once per API key (all clients count as one without API_KEYS);
    the next one is refused at the handshake with 429 (0: no cap)."""
    live_max_session_s: int = 3600
    """Longest live session in seconds; then the server ends it with an error event."""
    live_idle_s: int = 30
    """A live session that sends nothing for this long is closed (seconds)."""
    live_buffer_s: int = 30
    """Seconds of audio a live client may send ahead of real time; a client further ahead is
    sent an error and closed (a file should go to the batch API)."""
