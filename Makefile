# asr_service: `make run` runs the whole stack, `make test` runs the tests. Both set up what is missing.
SHELL := /bin/bash
PY ?= python3
VENV := .venv
STAMP := $(VENV)/.installed

.PHONY: run api worker flower test lint models venv redis-server clean

run: venv models redis-server ## the whole stack in the foreground: Redis (if none answers), API, workers, Flower
	./scripts/run.sh

api: venv ## only the API (gunicorn), e.g. on a web host
	$(VENV)/bin/gunicorn -c config/gunicorn.conf.py wsgi:app

worker: venv ## only the workers (WORKER_COUNT processes), e.g. on a GPU host that reaches Redis
	$(VENV)/bin/celery -A celery_app worker --pool=prefork -n worker@%h --loglevel=INFO

flower: venv ## only Flower, on FLOWER_PORT (default 5555)
	$(VENV)/bin/celery -A celery_app flower

test: venv models redis-server ## set up and run the whole test suite
	$(VENV)/bin/pytest

lint: venv
	$(VENV)/bin/ruff check .

models: venv ## the tiny Paraformer (built in code) and the real FSMN-VAD weights under models/
	$(VENV)/bin/python -m asr_service.engine.assets models

venv: $(STAMP)

# torch is pinned and installed first: it is a CPU wheel here, and pip must not pick a CUDA build.
$(STAMP): requirements.txt requirements-api.txt requirements-dev.txt
	test -x $(VENV)/bin/python || $(PY) -m venv $(VENV)
	$(VENV)/bin/pip install --disable-pip-version-check -q "$$(grep -E '^torch==' requirements.txt)"
	$(VENV)/bin/pip install --disable-pip-version-check -q -r requirements.txt -r requirements-dev.txt
	touch $@

redis-server: ## install redis-server (Debian package) when the machine has none
	@command -v redis-server >/dev/null || { \
	  echo "installing redis-server"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq redis-server >/dev/null; }

clean:
	rm -rf $(VENV) models run .pytest_cache
