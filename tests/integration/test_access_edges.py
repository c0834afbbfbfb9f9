"""Access edges: rate-limit buckets, odd keys, hostile filenames and types, error details."""

from __future__ import annotations

import io

from asr_service.api.problems import PROBLEM_JSON
from tests import samples
from tests.integration.flow import submit, wait_for


def test_random_keys_without_api_keys_share_one_rate_limit_bucket(make_client):
    limited = make_client(rate_limit="5/minute")
    answers = [limited.get("/api/v1/asr/history", headers={"X-API-Key": f"random-{n}"})
               for n in range(8)]
    assert [a.status_code for a in answers].count(429) == 3  # one bucket: the client address


def test_a_non_ascii_or_malformed_key_is_401_not_500(make_client):
    keyed = make_client(api_keys="k1")
    for key in ("ключ", "k1\u0000", "\u202ek1"):
        response = keyed.get("/api/v1/asr/history", headers={"X-API-Key": key.encode()
                                                             .decode("latin-1")})
        assert response.status_code == 401 and response.content_type == PROBLEM_JSON, key
    bearer = keyed.get("/api/v1/asr/history", headers={"Authorization": "Bearer ünï"})
    assert bearer.status_code == 401


def _raw_multipart(filename_header: str, data: bytes) -> tuple[bytes, str]:
    boundary = "b0und4ry"
    body = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"audio\"; "
            f"{filename_header}\r\nContent-Type: audio/wav\r\n\r\n").encode() + data + \
        f"\r\n--{boundary}--\r\n".encode()
    return body, f"multipart/form-data; boundary={boundary}"


def test_control_characters_never_reach_the_stored_filename(client, worker):
    # RFC 2231 lets a client send CR/LF (and bidi overrides) inside a percent-encoded filename.
    body, content_type = _raw_multipart(
        "filename*=UTF-8''evil%0D%0AX-Injected%3A%201%E2%80%AE.wav", samples.encode("wav", 1.0))
    response = client.post("/api/v1/asr/submit", data=body, content_type=content_type)
    assert response.status_code == 202, response.get_json()
    task_id = response.get_json()["task_id"]
    assert client.get(f"/api/v1/asr/result/{task_id}").get_json()["filename"] == \
        "evilX-Injected: 1.wav"
    download = client.get(f"/api/v1/asr/audio/{task_id}")
    assert download.status_code == 200 and "X-Injected" not in download.headers
    wait_for(client, task_id)


def test_audio_sent_as_a_text_field_is_422(client):
    response = client.post("/api/v1/asr/submit", content_type="multipart/form-data",
                           data={"audio": "not a file"})
    assert response.status_code == 422 and response.content_type == PROBLEM_JSON
    assert "must be a file" in response.get_json()["detail"]


def test_a_download_has_the_probed_type_and_nosniff_whatever_the_client_claimed(client):
    response = client.post("/api/v1/asr/submit", content_type="multipart/form-data",
                           data={"audio": (io.BytesIO(samples.encode("flac", 1.0)), "page.html",
                                           "text/html")})
    task_id = response.get_json()["task_id"]
    download = client.get(f"/api/v1/asr/audio/{task_id}")
    assert download.content_type == "audio/flac"
    assert download.headers["X-Content-Type-Options"] == "nosniff"
    client.delete(f"/api/v1/asr/task/{task_id}")


def test_a_job_error_shows_a_stable_type_and_no_internals(client, worker):
    # Probes as audio, fails in the full decode: its user-facing detail is shown as it is.
    data = bytearray(samples.encode("m4a", 10.0))
    third = len(data) // 3
    data[third: 2 * third] = b"\x5a" * third
    failed = wait_for(client, submit(client, bytes(data), "broken.m4a").get_json()["task_id"])
    assert failed["status"] == "failed"
    assert failed["error"]["type"] == "audio-invalid"
    assert "Traceback" not in failed["error"]["detail"]
