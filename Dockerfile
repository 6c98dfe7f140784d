# One image for every scout-tasks process (beat, worker, flower, api, migrate).
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1

WORKDIR /app
COPY pyproject.toml README.md alembic.ini celeryconfig.py ./
COPY scout_tasks ./scout_tasks
COPY migrations ./migrations
RUN pip install . && useradd --create-home --uid 1000 scout
USER scout

CMD ["scout-tasks", "--help"]
