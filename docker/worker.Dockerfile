# A GPU worker: CUDA runtime + the CUDA build of torch 2.13.0 + FunASR. Needs only Redis.
FROM nvidia/cuda:12.8.1-cudnn-runtime-ubuntu24.04
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 DEBIAN_FRONTEND=noninteractive \
    ASR_USE_GPU=true
RUN apt-get update && apt-get install -y --no-install-recommends \
        python3 python3-venv libsndfile1 \
    && rm -rf /var/lib/apt/lists/*
RUN python3 -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
WORKDIR /app
COPY requirements.txt requirements-api.txt requirements-engine.txt ./
# From PyPI (not this repo's CPU wheel) torch==2.13.0 is the CUDA build.
RUN pip install --no-cache-dir -r requirements.txt
# The package, installed (its dependencies are the pins above); /app keeps only entry points.
COPY pyproject.toml requirements-api.txt requirements-engine.txt /src/
COPY asr_service /src/asr_service
RUN pip install --no-cache-dir --no-deps /src && rm -rf /src
COPY config ./config
COPY celery_app.py ./
RUN useradd --create-home asr && mkdir -p /app/logs /models && chown asr /app/logs /models
USER asr
# Model weights are not baked in: mount them at /models and set ASR_MODEL=/models/<dir>,
# or give the container access to the ModelScope hub (cache under ~/.cache/modelscope).
CMD ["celery", "-A", "celery_app", "worker", "-n", "worker@%h", "--loglevel=INFO"]
