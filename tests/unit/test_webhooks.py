"""Webhook bodies, Standard Webhooks signatures and the retry schedule."""

from __future__ import annotations

import base64
import json
import os
import time

import pytest
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from asr_service.settings import Settings
from asr_service.webhooks import event_body, retry_delay, signed_headers

SECRET = "whsec_" + base64.b64encode(os.urandom(32)).decode()
DELIVERY = {"job_id": "j1", "type": "job.failed", "created_at": "1795580000.5",
            "data": json.dumps({"task_id": "j1", "status": "failed",
                                "error": {"type": "audio-invalid", "detail": "not audio"},
                                "created_at": 1795579990.0, "finished_at": 1795580000.5,
                                "duration_s": 3.0})}


def test_body_names_the_event_the_task_and_links():
    body = json.loads(event_body(DELIVERY, Settings(public_url="https://asr.example.com/"), None))

    assert body["type"] == "job.failed"
    assert body["timestamp"] == "2026-11-25T04:13:20.500000+00:00"
    data = body["data"]
    assert (data["task_id"], data["status"], data["error"]["type"]) == \
        ("j1", "failed", "audio-invalid")
    assert (data["created_at"], data["finished_at"], data["duration_s"]) == \
        ("2026-11-25T04:13:10+00:00", "2026-11-25T04:13:20.500000+00:00", 3.0)
    assert data["links"]["result"] == "https://asr.example.com/api/v1/asr/result/j1"
    assert data["links"]["srt"].endswith("/result/j1?format=srt")
    assert "result" not in data
    relative = json.loads(event_body(DELIVERY, Settings(), '{"text": "hi"}'))
    assert relative["data"]["links"]["audio"] == "/api/v1/asr/audio/j1"
    assert relative["data"]["result"] == {"text": "hi"}


def test_signature_verifies_and_any_change_breaks_it():
    body = event_body(DELIVERY, Settings(), None)
    headers = signed_headers(SECRET, "msg_1-0", body, time.time())

    assert headers["webhook-signature"].startswith("v1,")
    assert Webhook(SECRET).verify(body, headers)["data"]["task_id"] == "j1"
    with pytest.raises(WebhookVerificationError):  # one byte changed
        Webhook(SECRET).verify(body.replace("j1", "j2", 1), headers)
    with pytest.raises(WebhookVerificationError):  # another secret
        Webhook("whsec_" + base64.b64encode(os.urandom(32)).decode()).verify(body, headers)
    stale = signed_headers(SECRET, "msg_1-0", body, time.time() - 3600)
    with pytest.raises(WebhookVerificationError):  # a replayed old request
        Webhook(SECRET).verify(body, stale)


def test_retries_double_with_jitter_and_span_about_a_day_by_default():
    settings = Settings()
    assert retry_delay(settings, 1, rng=lambda: 0.5) == pytest.approx(10.0)
    assert retry_delay(settings, 4, rng=lambda: 0.5) == pytest.approx(80.0)
    assert retry_delay(settings, 1, rng=lambda: 0.0) == pytest.approx(9.0)
    assert retry_delay(settings, 1, rng=lambda: 1.0) == pytest.approx(11.0)
    total = sum(retry_delay(settings, n, rng=lambda: 0.5)
                for n in range(1, settings.webhook_max_attempts))
    print(f"\nwebhook retries span {total / 3600:.1f} h over {settings.webhook_max_attempts} "
          f"attempts (base {settings.webhook_retry_base_s:g} s)")
    assert 0.8 * 86400 < total < 1.2 * 86400, total
