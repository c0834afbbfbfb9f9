"""asr_service: speech recognition over REST, Celery workers on Redis, FunASR engines.

Importing the package loads nothing else: each process imports what it runs (the API
`asr_service.app.create_app`, the worker `asr_service.worker`, the webhook deliverer
`asr_service.webhooks`), so none pays for another's libraries.
"""

__all__ = ["__version__"]
__version__ = "0.1.0"
