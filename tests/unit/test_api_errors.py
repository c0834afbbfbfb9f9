"""Every API error is problem+json, Redis down gives quick 503s, and the docs work offline."""

from __future__ import annotations

import io
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from flask import Flask
from flask.testing import FlaskClient
from werkzeug.test import TestResponse

from asr_service.api.schemas import MAX_HOTWORDS
from asr_service.app import create_app
from asr_service.settings import Settings
from tests.samples import encode

PASSWORD = "s3cret-pw"
API_PATHS = {
    "/api/v1/asr/submit", "/api/v1/asr/result/{task_id}", "/api/v1/asr/history",
    "/api/v1/asr/audio/{task_id}", "/api/v1/asr/queue/status", "/api/v1/asr/retry/{task_id}",
    "/api/v1/asr/task/{task_id}", "/api/v1/health", "/api/v1/stats",
    "/api/v1/dashboard",  # the data behind the /dashboard page
    "/v1/audio/transcriptions", "/v1/models",  # OpenAI-compatible
    "/api/v1/models",
}
SOME_UUID = "3f2b8c1e-5d4a-4e6f-9a7b-1c2d3e4f5a6b"


def closed_port() -> int:
    """A local TCP port nobody listens on, so every Redis call is refused at once."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def app(tmp_path_factory: pytest.TempPathFactory) -> Flask:
    log_dir: Path = tmp_path_factory.mktemp("logs")
    return create_app(Settings(
        redis_url=f"redis://:{PASSWORD}@127.0.0.1:{closed_port()}/0",
        log_dir=str(log_dir), max_upload_mb=1, max_audio_seconds=2,
    ))


@pytest.fixture
def client(app: Flask) -> Iterator[FlaskClient]:
    with app.test_client() as client:
        yield client


def assert_problem(response: TestResponse, status: int) -> dict:
    """The response is an RFC 9457 problem with this status; returns its body."""
    assert response.status_code == status
    assert response.mimetype == "application/problem+json"
    body = response.get_json(force=True)
    assert body["status"] == status
    assert body["type"].startswith("/problems/")
    assert body["title"]
    assert body["detail"]
    assert PASSWORD not in response.get_data(as_text=True)
    return body


def named_fields(errors: dict[str, list[str]]) -> set[str]:
    """The field names a 422 problem complains about."""
    return set(errors)


def submit(client: FlaskClient, data: bytes | None, **form: str) -> TestResponse:
    fields: dict[str, object] = dict(form)
    if data is not None:
        fields["audio"] = (io.BytesIO(data), "recording.wav")
    return client.post("/api/v1/asr/submit", data=fields, content_type="multipart/form-data")


def test_health_with_redis_down_is_a_quick_503_with_the_reason(client: FlaskClient) -> None:
    started = time.monotonic()
    response = client.get("/api/v1/health")
    elapsed = time.monotonic() - started

    body = assert_problem(response, 503)
    assert elapsed < 5
    assert body["redis"] is False
    assert body["workers_online"] == 0
    assert len(body["reasons"]) == 1
    assert body["reasons"] == ["redis unreachable"]
    assert "127.0.0.1" not in response.get_data(as_text=True)  # no address (L4)


@pytest.mark.parametrize(
    "path", ["/api/v1/asr/history", "/api/v1/stats", "/api/v1/asr/queue/status",
             f"/api/v1/asr/result/{SOME_UUID}", f"/api/v1/asr/audio/{SOME_UUID}"],
)
def test_reads_with_redis_down_are_503_queue_unavailable(client: FlaskClient,
                                                         path: str) -> None:
    started = time.monotonic()
    response = client.get(path)

    body = assert_problem(response, 503)
    assert time.monotonic() - started < 5
    assert body["type"] == "/problems/queue-unavailable"
    assert response.headers["Retry-After"] == "5"
    # Neither Redis's address nor the driver's text (L4): the log has them.
    assert "127.0.0.1" not in body["detail"] and "Connection refused" not in body["detail"]


@pytest.mark.parametrize(("method", "path"), [("post", f"/api/v1/asr/retry/{SOME_UUID}"),
                                              ("delete", f"/api/v1/asr/task/{SOME_UUID}")])
def test_writes_with_redis_down_are_503_not_500(client: FlaskClient, method: str,
                                                path: str) -> None:
    response = getattr(client, method)(path)
    body = assert_problem(response, 503)

    # A change that may have reached Redis is never a plain failure: the problem names the
    # task and how to learn its fate (M5).
    assert body["type"] == "/problems/outcome-unknown"
    assert body["task_id"] == SOME_UUID
    assert f"/api/v1/asr/result/{SOME_UUID}" in body["detail"]
    assert response.headers["Retry-After"] == "5"


def test_valid_upload_with_redis_down_is_503_naming_the_task(client: FlaskClient) -> None:
    body = assert_problem(submit(client, encode("wav", seconds=1.0)), 503)

    assert body["type"] == "/problems/outcome-unknown"
    assert f"/api/v1/asr/result/{body['task_id']}" in body["detail"]
    assert "Idempotency-Key" in body["detail"]


def test_unknown_route_is_404_problem(client: FlaskClient) -> None:
    body = assert_problem(client.get("/api/v1/nothing-here"), 404)

    assert body["type"] == "/problems/not-found"
    assert body["instance"] == "/api/v1/nothing-here"


def test_result_of_a_malformed_task_id_is_404(client: FlaskClient) -> None:
    assert_problem(client.get("/api/v1/asr/result/not-a-uuid"), 404)


def test_wrong_method_is_405_problem(client: FlaskClient) -> None:
    assert_problem(client.delete(f"/api/v1/asr/result/{SOME_UUID}"), 405)


def test_submit_without_audio_field_is_422_naming_audio(client: FlaskClient) -> None:
    body = assert_problem(submit(client, None, language="zh"), 422)

    assert named_fields(body["errors"]) == {"audio"}
    assert "exactly one of them" in body["errors"]["audio"][0]
    assert body["detail"].startswith("invalid request: audio: send the recording as `audio`")


def test_submit_with_bad_language_is_422_naming_language(client: FlaskClient) -> None:
    body = assert_problem(submit(client, encode("wav", 1.0), language="Chinese"), 422)

    assert named_fields(body["errors"]) == {"language"}


def test_submit_of_non_audio_is_422_audio_invalid_before_redis(client: FlaskClient) -> None:
    body = assert_problem(submit(client, b"just some text, not a recording\n" * 10), 422)

    assert body["type"] == "/problems/audio-invalid"
    assert body["title"] == "Audio could not be decoded"


def test_submit_of_empty_file_is_422_audio_invalid(client: FlaskClient) -> None:
    body = assert_problem(submit(client, b""), 422)

    assert body["type"] == "/problems/audio-invalid"


def test_submit_longer_than_max_audio_seconds_is_422_too_long(client: FlaskClient) -> None:
    body = assert_problem(submit(client, encode("wav", seconds=3.0)), 422)

    assert body["type"] == "/problems/audio-too-long"
    assert "MAX_AUDIO_SECONDS=2" in body["detail"]


def test_upload_over_max_upload_mb_is_413_problem(client: FlaskClient) -> None:
    body = assert_problem(submit(client, bytes(1024 * 1024 + 1)), 413)

    assert body["type"] == "/problems/request-entity-too-large"


def test_history_with_bad_paging_is_422_naming_the_arguments(client: FlaskClient) -> None:
    body = assert_problem(client.get("/api/v1/asr/history?limit=0&offset=-1&status=done"), 422)

    assert named_fields(body["errors"]) == {"limit", "offset", "status"}


@pytest.fixture(scope="module")
def spec(app: Flask) -> dict:
    with app.test_client() as client:
        response = client.get("/openapi.json")
    assert response.status_code == 200
    return response.get_json()


def test_openapi_lists_the_api_paths_the_dashboard_data_and_openai(spec: dict) -> None:
    assert set(spec["paths"]) == API_PATHS


def test_openapi_documents_the_multipart_audio_field(spec: dict) -> None:
    body = spec["paths"]["/api/v1/asr/submit"]["post"]["requestBody"]
    ref = body["content"]["multipart/form-data"]["schema"]["$ref"]
    schema = spec["components"]["schemas"][ref.rsplit("/", 1)[-1]]

    assert schema["properties"]["audio"]["format"] == "binary"
    assert {"audio_url", "callback_url"} <= set(schema["properties"])  # one of audio, audio_url


def test_openapi_documents_problem_json_errors(spec: dict) -> None:
    responses = spec["paths"]["/api/v1/asr/submit"]["post"]["responses"]

    assert {"202", "413", "422", "503"} <= set(responses)
    assert "application/problem+json" in responses["422"]["content"]
    assert "application/problem+json" in spec["paths"]["/api/v1/health"]["get"]["responses"][
        "503"]["content"]


def test_openapi_documents_language_and_hotwords_in_the_multipart_body(spec: dict) -> None:
    post = spec["paths"]["/api/v1/asr/submit"]["post"]
    ref = post["requestBody"]["content"]["multipart/form-data"]["schema"]["$ref"]
    schema = spec["components"]["schemas"][ref.rsplit("/", 1)[-1]]

    assert {"audio", "language", "hotwords"} <= set(schema["properties"])
    assert all(p["in"] in ("query", "header", "path", "cookie")
               for p in post.get("parameters", []))


def test_docs_serve_swagger_ui_with_local_assets(client: FlaskClient) -> None:
    page = client.get("/docs")
    html = page.get_data(as_text=True)

    assert page.status_code == 200
    assert page.mimetype == "text/html"
    assert 'src="/docs/assets/swagger-ui-bundle.js"' in html
    assert "//cdn" not in html and "https://" not in html
    assert '"/openapi.json"' in html

    with client.get("/docs/assets/swagger-ui-bundle.js") as bundle:  # closes the sent file
        assert bundle.status_code == 200
        assert "javascript" in bundle.mimetype
        assert b"SwaggerUIBundle" in bundle.data
    with client.get("/docs/assets/swagger-ui.css") as css:
        assert css.status_code == 200


def test_openai_paths_answer_errors_in_openai_shape(client: FlaskClient) -> None:
    missing = client.post("/v1/audio/transcriptions", data={"model": "whisper-1"},
                          content_type="multipart/form-data")
    assert missing.status_code == 400 and missing.content_type == "application/json"
    assert missing.get_json() == {"error": {
        "message": missing.get_json()["error"]["message"], "type": "invalid_request_error",
        "param": "file", "code": "unprocessable_entity"}}

    bad_format = client.post("/v1/audio/transcriptions", data={
        "model": "whisper-1", "file": (io.BytesIO(encode("wav")), "a.wav"),
        "response_format": "mp3"}, content_type="multipart/form-data")
    assert bad_format.get_json()["error"]["param"] == "response_format"

    down = client.get("/v1/models")  # Redis is down in this module
    assert down.status_code == 503 and down.get_json()["error"]["type"] == "server_error"


def test_openai_prompt_of_too_many_words_is_a_400_naming_prompt_not_truncated(
        client: FlaskClient) -> None:
    # The same splitter and limit as submit's hotwords (a 422 there), in OpenAI's shape.
    def transcribe(words: int) -> TestResponse:
        return client.post("/v1/audio/transcriptions", data={
            "model": "whisper-1", "file": (io.BytesIO(encode("wav")), "a.wav"),
            "prompt": "，".join(f"w{i}" for i in range(words))},
            content_type="multipart/form-data")

    too_many = transcribe(MAX_HOTWORDS + 1)
    assert too_many.status_code == 400 and too_many.content_type == "application/json"
    error = too_many.get_json()["error"]
    assert (error["type"], error["param"]) == ("invalid_request_error", "prompt")
    assert f"at most {MAX_HOTWORDS} hotwords" in error["message"]
    # The limit itself passes validation: the (3 s) recording is what is refused next.
    assert transcribe(MAX_HOTWORDS).get_json()["error"]["code"] == "audio_too_long"

    hotwords = " ".join(f"w{i}" for i in range(MAX_HOTWORDS + 1))
    refused = assert_problem(submit(client, encode("wav"), hotwords=hotwords), 422)
    assert refused["errors"] == {"hotwords": [f"at most {MAX_HOTWORDS} hotwords"]}


def test_result_rejects_unknown_formats_and_long_waits(client: FlaskClient) -> None:
    for query in ("format=docx", "wait=61", "wait=-1"):
        answer = client.get(f"/api/v1/asr/result/{SOME_UUID}?{query}")
        assert answer.status_code == 422, query
        assert answer.content_type == "application/problem+json"
