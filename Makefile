# asr_service: `make run` runs the whole stack, `make test` runs the tests. Both set up what is missing.
SHELL := /bin/bash
PY ?= python3
VENV := .venv
STAMP := $(VENV)/.installed

.PHONY: run api worker flower webhooks test test-fast chaos lint models venv system-packages redis-server vendor clean \
	bench-slow bench-api bench bench-control bench-diarize bench-live capacity espeak-ng settings-docs

run: venv models redis-server ## the whole stack in the foreground: Redis (if none answers), API, workers, Flower, webhooks
	./scripts/run.sh

api: venv ## only the API (gunicorn), e.g. on a web host
	$(VENV)/bin/gunicorn -c config/gunicorn.conf.py wsgi:app

worker: venv ## only the workers (WORKER_COUNT processes), e.g. on a GPU host; a second group on one host: WORKER_NAME
	$(VENV)/bin/celery -A celery_app worker -n "$${WORKER_NAME:-worker}@%h" --loglevel=INFO

flower: venv ## only Flower, on FLOWER_HOST:FLOWER_PORT (default 127.0.0.1:5555)
	$(VENV)/bin/celery -A celery_app flower --conf=config/flowerconfig.py

webhooks: venv ## only the webhook deliverer (callback_url), e.g. next to the API; it holds no model
	$(VENV)/bin/python -m asr_service.webhooks

# Parallel lanes (pytest-xdist): each lane is a process with its own redis-server and session
# Celery worker; a test file runs whole on one lane, files sharing something else name one
# xdist_group in their pytestmark (tests/conftest.py). TEST_WORKERS=0: one process, as plain `pytest` runs.
# Three lanes on two cores: about half of a lane's time is spent waiting (leases, sweeps, workers
# starting), and a third lane fills it (the suite: 535 s with two lanes, 428 s with three).
TEST_WORKERS ?= 3
PYTEST_LANES = $(if $(filter 0,$(TEST_WORKERS)),,-n $(TEST_WORKERS) --dist loadgroup)

test: venv models system-packages ## set up and run the whole test suite (every test, in 3 lanes)
	$(VENV)/bin/pytest $(PYTEST_LANES)

test-fast: venv models redis-server ## the edit loop: unit and fast integration tests, none marked slow (~75 s)
	$(VENV)/bin/pytest $(PYTEST_LANES) -m "not slow"

# The chaos soak (tests/chaos, docs/reliability.md): `make test` runs 60 s of it; this, as long
# as you like. Needs root (network namespaces). CHAOS_OUT=dir keeps the history and logs.
SECONDS ?= 1800
SEED ?= 1
CLIENTS ?= 16
chaos: venv models system-packages ## every fault at once for SECONDS (1800) from SEED (1), CLIENTS (16), then the history checker
	CHAOS_SECONDS=$(SECONDS) CHAOS_SEED=$(SEED) CHAOS_CLIENTS=$(CLIENTS) CHAOS_GAP_S=$(or $(GAP),7) \
		$(VENV)/bin/pytest -p no:cacheprovider -s tests/chaos/test_soak.py

bench-slow: venv redis-server ## /health latency while 32 uploads trickle in at 1 KB/s (prints a table)
	$(VENV)/bin/python scripts/bench_slow_clients.py

bench-api: venv redis-server ## submit rate with 5,000 queued jobs, read p50/p99 with 100,000 retained (prints a table)
	$(VENV)/bin/python scripts/bench_api.py

bench-control: venv models redis-server ## CPU ms per job of API, Redis and worker with near-zero model cost, Redis commands/bytes per job (~45 s)
	$(VENV)/bin/python scripts/bench_control.py $(BENCH_ARGS)

capacity: venv ## the KEDA capacity model: p95 queue wait and GPU-hours per listLength/cooldown, a day at 10k jobs/min with a 10x burst
	$(VENV)/bin/python scripts/capacity.py $(CAPACITY_ARGS)

lint: venv
	$(VENV)/bin/ruff check .

settings-docs: venv ## regenerate config/.env.example and docs/configuration.md's table from asr_service/settings/
	$(VENV)/bin/python -m asr_service.settings.docs

models: venv ## under models/: the tiny Paraformer (built in code), the real FSMN-VAD, Whisper tiny.en and speaker-encoder weights; BIG=1: also the large-dims one
	$(VENV)/bin/python scripts/assets.py models $(if $(BIG),--big)

# funasr-server (the benchmark's peer) ships with funasr but needs these web packages, which the
# service itself does not; installed only for `make bench`. Without them the peer reads "n/a".
BENCH_PEER_PACKAGES := fastapi==0.165.0 starlette==1.10.0 uvicorn==0.54.0 python-multipart==0.0.34

bench: venv models redis-server espeak-ng $(VENV)/.bench-peer ## throughput: bare engine, the service, funasr-server (~5 min; BIG=1: large-dims model; BENCH_ARGS=...)
	$(VENV)/bin/python scripts/bench.py $(if $(BIG),--model big) $(BENCH_ARGS)

bench-live: venv models redis-server espeak-ng ## live sessions: partial/final latency, WER beside the file path, sessions per host, API CPU per session (~2 min; ENGINE=faster-whisper, ONLINE=1: 2-pass)
	$(VENV)/bin/python scripts/bench_live.py --engine $(or $(ENGINE),funasr) $(if $(ONLINE),--online) $(BENCH_ARGS)

bench-diarize: venv models espeak-ng ## diarization: DER and speaker counts on 15 espeak conversations, both engines; RTF with/without; 4 h peak RSS (~5 min)
	$(VENV)/bin/python scripts/bench_diarize.py $(BENCH_ARGS)

$(VENV)/.bench-peer: $(STAMP)
	$(VENV)/bin/pip install --disable-pip-version-check -q $(BENCH_PEER_PACKAGES) && touch $@ || \
	  echo "could not install funasr-server's packages: the benchmark marks the peer n/a"

venv: $(STAMP)

# torch is pinned and installed first, by pip: it is a CPU wheel here (pip's find-links), and no
# installer may pick a CUDA build. The other pins go in with uv (parallel downloads and unpacking,
# bytecode compiled on all cores: 2.6 GB in ~40 s where pip took ~95 s), then the package itself,
# editable and without resolving again what the pins installed, so `asr_service` imports from any
# directory (no PYTHONPATH).
UV = $(VENV)/bin/uv pip install -q --python $(VENV)/bin/python
$(STAMP): requirements.txt requirements-api.txt requirements-engine.txt requirements-dev.txt pyproject.toml
	test -x $(VENV)/bin/python || $(PY) -m venv $(VENV)
	$(VENV)/bin/pip install --disable-pip-version-check -q "$$(grep -E '^torch==' requirements-engine.txt)" "$$(grep -E '^uv==' requirements-dev.txt)"
	$(UV) --compile-bytecode -r requirements.txt -r requirements-dev.txt
	$(UV) --no-deps -e .
	touch $@

# Debian packages, as command:package pairs, installed only when the command is missing:
# redis-server (the broker, also for the tests) and chromium (the dashboard's browser test).
install_missing = @missing=""; for pair in $(1); do \
	  command -v "$${pair%%:*}" >/dev/null || missing="$$missing $${pair\#\#*:}"; done; \
	if [ -n "$$missing" ]; then \
	  echo "installing:$$missing"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null; fi

system-packages: ## the Debian packages the stack and the tests need (redis-server, chromium, espeak-ng)
	$(call install_missing,redis-server:redis-server chromium:chromium espeak-ng:espeak-ng)

redis-server: ## only redis-server (what `make run` needs)
	$(call install_missing,redis-server:redis-server)

espeak-ng: ## only espeak-ng (the benchmark's spoken clips)
	$(call install_missing,espeak-ng:espeak-ng)

# The dashboard's charting library, vendored (committed) so the service works offline and CI needs
# no npm. `make vendor` fetches exactly this version from the npm registry again (npm checks the
# tarball against the registry's sha512) and copies its built file; see asr_service/static/vendor/.
CHARTJS_VERSION := 4.6.1
VENDOR_DIR := asr_service/static/vendor

vendor: ## re-fetch the vendored Chart.js from the npm registry
	@tmp=$$(mktemp -d) && trap 'rm -rf "$$tmp"' EXIT && \
	  (cd "$$tmp" && npm pack --silent chart.js@$(CHARTJS_VERSION) >/dev/null && \
	   tar xzf chart.js-$(CHARTJS_VERSION).tgz) && \
	  cp "$$tmp/package/dist/chart.umd.min.js" $(VENDOR_DIR)/chart.umd.min.js && \
	  cp "$$tmp/package/LICENSE.md" $(VENDOR_DIR)/chart.js.LICENSE.md && \
	  echo "chart.js $(CHARTJS_VERSION): $$(sha256sum $(VENDOR_DIR)/chart.umd.min.js)"

clean:
	rm -rf $(VENV) models run .pytest_cache
