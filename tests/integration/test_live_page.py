"""/live in a real headless Chromium whose microphone is an espeak-ng recording: the page
streams it to /v1/realtime and shows partial and final captions from a real worker."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from tests.conversations import VOICES, speak
from tests.integration.conftest import ApiServer
from tests.integration.test_dashboard import CHROMIUM, DevTools, launch

pytestmark = [
    pytest.mark.slow,  # headless chromium and a real-time stream
    pytest.mark.skipif(
        not Path(CHROMIUM).exists(),
        reason="chromium is not installed (`make test` installs the Debian package)"),
]
RATE = 16_000
KEY = "live-page-key-1"


@pytest.fixture
def microphone(tmp_path: Path) -> Path:
    """What Chromium's fake capture device plays (once): two sentences and pauses."""
    pause = np.zeros(RATE, dtype=np.float32)
    audio = np.concatenate([pause, speak("the meeting moved to thursday", VOICES[0]), pause,
                            speak("please send the notes after lunch", VOICES[1]), pause, pause])
    path = tmp_path / "microphone.wav"
    sf.write(path, audio, RATE, subtype="PCM_16")
    return path


@pytest.fixture
def keyed_server(settings, tmp_path: Path) -> Iterator[str]:
    """gunicorn, as in production (werkzeug's dev server writes an HTTP response after a
    WebSocket closes, which a browser may read as an invalid frame)."""
    server = ApiServer(replace(settings, api_keys=KEY), tmp_path / "api")
    server.start()
    try:
        yield server.url
    finally:
        server.stop()


@pytest.fixture
def browser(tmp_path: Path, microphone: Path) -> Iterator[DevTools]:
    yield from launch(tmp_path, "--use-fake-ui-for-media-stream",
                      "--use-fake-device-for-media-stream",
                      f"--use-file-for-fake-audio-capture={microphone}%noloop",
                      "--autoplay-policy=no-user-gesture-required")


def test_the_live_page_captions_the_microphone_with_an_api_key(keyed_server, browser, worker):
    browser.call("Page.navigate", url=f"{keyed_server}/live")
    browser.wait_for("!!window.asrLive", 15)
    browser.evaluate(f"document.getElementById('key-input').value = '{KEY}';"
                     "document.getElementById('start-form').requestSubmit(); true")
    browser.wait_for("window.asrLive.status === 'listening' || "
                     "window.asrLive.errors.length > 0", 20)
    browser.wait_for("window.asrLive.finals.length >= 2 || window.asrLive.errors.length > 0", 60)
    seen = browser.evaluate("window.asrLive")
    assert seen["errors"] == [], seen
    assert seen["partials"] >= 1 and all(seen["finals"]), seen
    shown = browser.evaluate("document.querySelectorAll('#captions .final').length")
    assert shown == len(seen["finals"])
    browser.evaluate("document.getElementById('stop').click(); true")
    assert browser.console_errors() == []
