# The API (and Flower): no torch, no model, small image.
FROM python:3.11-slim
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1
WORKDIR /app
RUN apt-get update && apt-get install -y --no-install-recommends libsndfile1 \
    && rm -rf /var/lib/apt/lists/*
COPY requirements-api.txt .
RUN pip install --no-cache-dir -r requirements-api.txt
# The package, installed (its dependencies are the pins above); /app keeps only entry points.
COPY pyproject.toml requirements-api.txt requirements-engine.txt /src/
COPY asr_service /src/asr_service
RUN pip install --no-cache-dir --no-deps /src && rm -rf /src
COPY config ./config
COPY wsgi.py celery_app.py ./
RUN useradd --create-home asr && mkdir -p /app/logs && chown asr /app/logs
USER asr
EXPOSE 8000
CMD ["gunicorn", "-c", "config/gunicorn.conf.py", "wsgi:app"]
