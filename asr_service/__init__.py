"""asr_service: speech recognition over REST, Celery workers on Redis, FunASR engines."""

from asr_service.app import create_app

__all__ = ["create_app", "__version__"]
__version__ = "0.1.0"
