"""Settings.from_env: parsing, defaults, and every bad variable reported in one error."""

from __future__ import annotations

import os
from dataclasses import fields
from pathlib import Path

import pytest

from asr_service.settings import Settings, SettingsError

ENV_EXAMPLE = Path(__file__).resolve().parents[2] / "config" / ".env.example"


def error_lines(environ: dict[str, str]) -> list[str]:
    """The per-variable lines of the SettingsError that from_env raises."""
    with pytest.raises(SettingsError) as info:
        Settings.from_env(environ)
    header, *lines = str(info.value).splitlines()
    assert header == "invalid configuration:"
    return [line.strip() for line in lines]


def test_empty_environment_gives_the_documented_defaults() -> None:
    settings = Settings.from_env({})

    assert settings == Settings()
    assert settings.redis_url == "redis://127.0.0.1:6379/0"
    assert settings.asr_use_gpu == "auto"
    assert settings.max_upload_mb == 100
    assert settings.log_level == "INFO"


def test_env_example_values_are_valid_and_equal_the_defaults() -> None:
    environ = {}
    for line in ENV_EXAMPLE.read_text().splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            name, _, value = line.partition("=")
            environ[name.strip()] = value

    assert Settings.from_env(environ) == Settings()
    # REDIS_URL and FLOWER_BASIC_AUTH are documented commented out (an empty FLOWER_BASIC_AUTH
    # would read as a login to Flower, which reads that variable itself).
    documented = {name.lower() for name in environ} | {"redis_url", "flower_basic_auth"}
    assert {f.name for f in fields(Settings)} <= documented


def test_reads_os_environ_when_no_mapping_is_given(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MAX_UPLOAD_MB", "7")
    monkeypatch.setenv("QUEUE_NAME", "asr-test")

    settings = Settings.from_env()

    assert settings.max_upload_mb == 7
    assert settings.queue_name == "asr-test"


def test_bad_port_and_bad_gpu_flag_are_reported_together() -> None:
    lines = error_lines({"API_PORT": "70000", "ASR_USE_GPU": "yes"})

    assert lines == [
        "ASR_USE_GPU='yes': must be one of auto, true, false",
        "API_PORT='70000': must be a port number 1-65535",
    ]


def test_every_bad_variable_is_named_in_one_error() -> None:
    lines = error_lines({
        "ASR_USE_GPU": "cuda", "ASR_THREADS": "-1", "MAX_UPLOAD_MB": "0",
        "WORKER_COUNT": "two", "LOG_LEVEL": "warn", "FLOWER_PORT": "0", "REDIS_PORT": "x",
    })

    named = [line.split("=", 1)[0] for line in lines]
    assert sorted(named) == sorted([
        "ASR_USE_GPU", "ASR_THREADS", "MAX_UPLOAD_MB", "WORKER_COUNT", "LOG_LEVEL",
        "FLOWER_PORT", "REDIS_PORT",
    ])


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ("0", "must be at least 1"),
        ("-5", "must be at least 1"),
        ("1.5", "must be a whole number"),
        ("ten", "must be a whole number"),
        ("", "must be a whole number"),
    ],
)
def test_integer_settings_must_be_positive_whole_numbers(raw: str, message: str) -> None:
    assert error_lines({"MAX_UPLOAD_MB": raw}) == [f"MAX_UPLOAD_MB={raw!r}: {message}"]


@pytest.mark.parametrize(
    "name",
    ["ASR_BATCH_AUDIO_S", "ASR_BATCH_SIZE", "MAX_RECORDINGS", "WORKER_COUNT", "MAX_AUDIO_SECONDS",
     "RESULT_RETENTION_S", "TASK_TIME_LIMIT_S", "MODEL_LOAD_TIMEOUT_S", "API_WORKERS"],
)
def test_zero_is_rejected_for_every_count_and_duration(name: str) -> None:
    assert error_lines({name: "0"}) == [f"{name}='0': must be at least 1"]


def test_integer_values_are_parsed_with_surrounding_spaces() -> None:
    settings = Settings.from_env({"MAX_UPLOAD_MB": " 25 ", "WORKER_COUNT": "3"})

    assert settings.max_upload_mb == 25
    assert settings.worker_count == 3


def test_engine_nice_is_a_niceness() -> None:
    assert Settings.from_env({}).asr_engine_nice == 10
    assert Settings.from_env({"ASR_ENGINE_NICE": "0"}).asr_engine_nice == 0
    assert error_lines({"ASR_ENGINE_NICE": "20"}) == [
        "ASR_ENGINE_NICE='20': must be a niceness 0-19"]


def test_asr_threads_zero_is_allowed_but_negative_is_not() -> None:
    assert Settings.from_env({"ASR_THREADS": "0"}).asr_threads == 0
    assert Settings.from_env({"ASR_THREADS": "6"}).asr_threads == 6
    assert error_lines({"ASR_THREADS": "-1"}) == ["ASR_THREADS='-1': must be at least 0"]


@pytest.mark.parametrize(("raw", "parsed"), [("auto", "auto"), (" TRUE ", "true"),
                                             ("False", "false")])
def test_gpu_flag_accepts_auto_true_false_in_any_case(raw: str, parsed: str) -> None:
    assert Settings.from_env({"ASR_USE_GPU": raw}).asr_use_gpu == parsed


@pytest.mark.parametrize("raw", ["yes", "1", "cuda", ""])
def test_gpu_flag_rejects_anything_else(raw: str) -> None:
    assert error_lines({"ASR_USE_GPU": raw}) == [
        f"ASR_USE_GPU={raw!r}: must be one of auto, true, false"
    ]


@pytest.mark.parametrize(("raw", "parsed"), [("debug", "DEBUG"), ("Warning", "WARNING"),
                                             ("ERROR", "ERROR")])
def test_log_level_is_case_insensitive_and_stored_upper_case(raw: str, parsed: str) -> None:
    assert Settings.from_env({"LOG_LEVEL": raw}).log_level == parsed


@pytest.mark.parametrize("raw", ["warn", "critical", "verbose"])
def test_log_level_outside_the_four_levels_is_rejected(raw: str) -> None:
    assert error_lines({"LOG_LEVEL": raw}) == [
        f"LOG_LEVEL={raw!r}: must be one of debug, info, warning, error"
    ]


@pytest.mark.parametrize("name", ["API_PORT", "FLOWER_PORT"])
def test_ports_must_be_between_1_and_65535(name: str) -> None:
    assert Settings.from_env({name: "65535"}) == Settings(**{name.lower(): 65535})
    assert Settings.from_env({name: "1"}) == Settings(**{name.lower(): 1})
    assert error_lines({name: "65536"}) == [f"{name}='65536': must be a port number 1-65535"]
    assert error_lines({name: "0"}) == [f"{name}='0': must be at least 1"]


def test_redis_url_wins_over_host_and_port() -> None:
    settings = Settings.from_env({
        "REDIS_URL": "redis://:secret@cache.internal:6390/2",
        "REDIS_HOST": "elsewhere", "REDIS_PORT": "1234",
    })

    assert settings.redis_url == "redis://:secret@cache.internal:6390/2"


@pytest.mark.parametrize("url", ["rediss://cache:6380/0", "unix:///run/redis.sock"])
def test_tls_and_unix_socket_redis_urls_are_accepted(url: str) -> None:
    assert Settings.from_env({"REDIS_URL": url}).redis_url == url


def test_redis_url_with_another_scheme_is_rejected_without_echoing_its_password() -> None:
    assert error_lines({"REDIS_URL": "http://:hunter2@cache:6379"}) == [
        "REDIS_URL='http://cache:6379': must start with redis://, rediss:// or unix://"
    ]


def test_redis_host_and_port_build_the_url() -> None:
    settings = Settings.from_env({"REDIS_HOST": "cache.internal", "REDIS_PORT": "6380"})

    assert settings.redis_url == "redis://cache.internal:6380/0"


def test_empty_redis_url_and_host_fall_back_to_localhost() -> None:
    settings = Settings.from_env({"REDIS_URL": "", "REDIS_HOST": "", "REDIS_PORT": "6390"})

    assert settings.redis_url == "redis://127.0.0.1:6390/0"


@pytest.mark.parametrize("port", ["0", "65536", "abc", "-1", ""])
def test_bad_redis_port_is_reported(port: str) -> None:
    assert error_lines({"REDIS_PORT": port}) == [
        f"REDIS_PORT={port!r}: must be a port number 1-65535"
    ]


def test_redis_port_with_a_non_ascii_digit_is_reported_by_name() -> None:
    assert error_lines({"REDIS_PORT": "6²"}) == [
        "REDIS_PORT='6²': must be a port number 1-65535"
    ]


@pytest.mark.parametrize("name", ["QUEUE_NAME", "ASR_MODEL"])
def test_required_text_settings_cannot_be_empty(name: str) -> None:
    assert error_lines({name: ""})[0].startswith(f"{name}='':")


def test_optional_models_may_be_empty_to_disable_them() -> None:
    settings = Settings.from_env({"ASR_VAD_MODEL": "", "ASR_PUNC_MODEL": ""})

    assert settings.asr_vad_model == ""
    assert settings.asr_punc_model == ""


def test_max_upload_bytes_is_mebibytes() -> None:
    assert Settings(max_upload_mb=1).max_upload_bytes == 1_048_576
    assert Settings(max_upload_mb=100).max_upload_bytes == 104_857_600


@pytest.mark.parametrize(("hard", "soft"), [(3600, 3570), (31, 1), (30, 1), (1, None)])
def test_soft_time_limit_defaults_to_30_s_before_the_hard_limit(hard: int,
                                                                soft: int | None) -> None:
    assert Settings(task_time_limit_s=hard).soft_time_limit_s == soft


@pytest.mark.parametrize(("hard", "soft", "expected"), [(10, 4, 4), (10, 10, None), (10, 0, 1)])
def test_explicit_soft_limit_must_come_before_the_hard_one(hard: int, soft: int,
                                                          expected: int | None) -> None:
    settings = Settings(task_time_limit_s=hard, task_soft_time_limit_s=soft)
    assert settings.soft_time_limit_s == expected


def test_explicit_thread_count_is_used_as_is(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(os, "cpu_count", lambda: 64)

    assert Settings(asr_threads=3, worker_count=4).threads == 3


@pytest.mark.parametrize(("cores", "workers", "threads"),
                         [(16, 4, 4), (16, 3, 5), (2, 4, 1), (None, 1, 1)])
def test_zero_threads_divides_the_cores_between_workers(
    monkeypatch: pytest.MonkeyPatch, cores: int | None, workers: int, threads: int
) -> None:
    monkeypatch.setattr(os, "cpu_count", lambda: cores)

    assert Settings(asr_threads=0, worker_count=workers).threads == threads


def test_redis_url_display_hides_the_password() -> None:
    settings = Settings(redis_url="redis://ops:s3cret@cache.internal:6390/2")
    assert settings.redis_url_display == "redis://cache.internal:6390/2"


@pytest.mark.parametrize("host", ["0.0.0.0", "::", "10.0.0.5", "api.example.com"])
def test_an_api_beyond_loopback_needs_keys_or_an_explicit_opt_out(host: str) -> None:
    exposed = Settings.from_env({"API_HOST": host})
    assert "API_KEYS" in (exposed.api_exposure_error() or "")
    assert Settings.from_env({"API_HOST": host, "API_KEYS": "k1"}).api_exposure_error() is None
    assert Settings.from_env({"API_HOST": host, "ALLOW_ANONYMOUS": "true"}) \
        .api_exposure_error() is None


@pytest.mark.parametrize("host", ["127.0.0.1", "::1", "localhost", "127.0.0.2"])
def test_loopback_needs_no_authentication(host: str) -> None:
    settings = Settings.from_env({"API_HOST": host, "FLOWER_HOST": host})
    assert settings.api_exposure_error() is None and settings.flower_exposure_error() is None


def test_flower_beyond_loopback_needs_a_login() -> None:
    assert "FLOWER_BASIC_AUTH" in (Settings.from_env({"FLOWER_HOST": "0.0.0.0"})
                                   .flower_exposure_error() or "")
    assert Settings.from_env({"FLOWER_HOST": "0.0.0.0", "FLOWER_BASIC_AUTH": "ops:pw"}) \
        .flower_exposure_error() is None


def test_redis_password_joins_a_url_without_one_and_stays_out_of_reprs() -> None:
    settings = Settings.from_env({"REDIS_HOST": "cache", "REDIS_PASSWORD": "p@ss/word"})
    assert settings.redis_url == "redis://:p%40ss%2Fword@cache:6379/0"
    assert "p%40ss" not in repr(settings) and "p%40ss" not in settings.redis_url_display
    given = Settings.from_env({"REDIS_URL": "redis://:own@cache:1/0", "REDIS_PASSWORD": "x"})
    assert given.redis_url == "redis://:own@cache:1/0"
    assert error_lines({"ALLOW_ANONYMOUS": "maybe"}) == \
        ["ALLOW_ANONYMOUS='maybe': must be true or false"]


def test_sentinels_are_parsed_into_host_port_pairs_and_shown_without_passwords() -> None:
    settings = Settings.from_env({"REDIS_SENTINELS": " s1:26379, [::1]:26380,10.0.0.3:1 ",
                                  "REDIS_SENTINEL_MASTER": "mymaster",
                                  "REDIS_PASSWORD": "master-pw",
                                  "REDIS_SENTINEL_PASSWORD": "sentinel-pw",
                                  "REDIS_MIN_REPLICAS": "1"})
    assert settings.sentinel_nodes == [("s1", 26379), ("::1", 26380), ("10.0.0.3", 1)]
    assert settings.redis_min_replicas == 1
    assert settings.redis_url_display.startswith("sentinel://")
    assert settings.redis_url_display.endswith("/mymaster")
    for text in (repr(settings), settings.redis_url_display):
        assert "master-pw" not in text and "sentinel-pw" not in text
    assert Settings.from_env({}).sentinel_nodes == []


@pytest.mark.parametrize("raw", ["s1", "s1:", ":26379", "s1:0", "s1:65536", "s1:2637x",
                                 "s1:26379,s2"])
def test_a_sentinel_that_is_not_host_port_is_reported(raw: str) -> None:
    (line,) = error_lines({"REDIS_SENTINELS": raw})
    assert line.startswith("REDIS_SENTINELS=") and "is not host:port" in line


def test_min_replicas_may_be_zero_but_not_negative() -> None:
    assert Settings.from_env({"REDIS_MIN_REPLICAS": "0"}).redis_min_replicas == 0
    (line,) = error_lines({"REDIS_MIN_REPLICAS": "-1"})
    assert line.startswith("REDIS_MIN_REPLICAS=")


def test_a_stored_audio_budget_below_the_upload_limit_is_refused_with_the_other_errors() -> None:
    lines = error_lines({"MAX_STORED_AUDIO_MB": "50", "MAX_UPLOAD_MB": "100",
                         "MAX_QUEUED_JOBS": "10", "MAX_QUEUED_JOBS_PER_KEY": "20",
                         "API_PORT": "x"})

    assert lines[0].startswith("API_PORT=")
    assert lines[1].startswith("MAX_STORED_AUDIO_MB=50 is below MAX_UPLOAD_MB=100")
    assert "at least 101" in lines[1]
    assert lines[2].startswith("MAX_QUEUED_JOBS_PER_KEY=20 is above MAX_QUEUED_JOBS=10")
    assert len(lines) == 3


@pytest.mark.parametrize("environ", [
    {"MAX_STORED_AUDIO_MB": "101", "MAX_UPLOAD_MB": "100"},
    {"MAX_STORED_AUDIO_MB": "0", "MAX_UPLOAD_MB": "100"},  # no budget at all
    {"MAX_QUEUED_JOBS": "0", "MAX_QUEUED_JOBS_PER_KEY": "20"},  # no total cap
])
def test_budgets_that_can_work_are_accepted(environ: dict[str, str]) -> None:
    Settings.from_env(environ)


@pytest.mark.parametrize(
    ("old", "new", "raw", "field", "value"),
    [("ASR_BATCH_SIZE", "ASR_BATCH_AUDIO_S", "120", "asr_batch_audio_s", 120),
     ("WEBHOOK_ALLOW_PRIVATE", "ALLOW_PRIVATE_URLS", "true", "allow_private_urls", True)],
)
def test_a_deprecated_name_still_sets_its_setting_and_the_new_name_wins(
        old: str, new: str, raw: str, field: str, value: object) -> None:
    assert getattr(Settings.from_env({old: raw}), field) == value
    default = getattr(Settings(), field)
    assert getattr(Settings.from_env({old: raw, new: str(default).lower()}), field) == default
    assert getattr(Settings.from_env({old: "x", new: raw}), field) == value  # old: unread


def test_a_bad_deprecated_name_is_reported_by_the_name_it_was_given() -> None:
    assert error_lines({"WEBHOOK_ALLOW_PRIVATE": "maybe"}) == [
        "WEBHOOK_ALLOW_PRIVATE='maybe': must be true or false"]


def test_worker_ready_file_is_optional_and_taken_as_given():
    assert Settings.from_env({"WORKER_READY_FILE": ""}).worker_ready_file == ""
    assert Settings.from_env({"WORKER_READY_FILE": "/run/asr/ready"}).worker_ready_file == \
        "/run/asr/ready"
