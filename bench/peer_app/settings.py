"""Django settings for the peer: only django-celery-beat and the run table."""

from __future__ import annotations

import os
from urllib.parse import unquote, urlsplit

_db = urlsplit(os.environ.get("PEER_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/peer"))

SECRET_KEY = "bench-only, never served"
DEBUG = False
USE_TZ = True
TIME_ZONE = "UTC"
INSTALLED_APPS = ["django_celery_beat", "peer_app"]
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
DATABASES = {
    "default": {
        "ENGINE": "django.db.backends.postgresql",
        "NAME": _db.path.lstrip("/"),
        "USER": unquote(_db.username or ""),
        "PASSWORD": unquote(_db.password or ""),
        "HOST": _db.hostname or "",
        "PORT": str(_db.port or ""),
        # Persistent connections, as a tuned deployment runs them: otherwise
        # Celery's Django fixup opens a new connection for every task.
        "CONN_MAX_AGE": None,
    }
}
