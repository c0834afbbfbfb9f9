"""Celery entry point: `celery -A celery_app worker` and `celery -A celery_app flower`."""

from asr_service.settings import Settings
from asr_service.worker import create_worker

app = create_worker(Settings.from_env())
