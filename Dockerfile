# One image for every scout-tasks process (beat, worker, flower, api, migrate).
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1

WORKDIR /app
COPY pyproject.toml README.md LICENSE alembic.ini celeryconfig.py ./
COPY scout_tasks ./scout_tasks
COPY migrations ./migrations
# The flower extra: docker-compose.yml runs Flower from this image too.
RUN pip install '.[flower]' && useradd --create-home --uid 1000 scout
USER scout

CMD ["scout-tasks", "--help"]
