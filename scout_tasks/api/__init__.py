"""The HTTP API: the CLI's operations over JSON, plus health and metrics.

Routes are thin: request bodies arrive as raw JSON objects and go through
:mod:`scout_tasks.service` (which validates with :mod:`scout_tasks.validation`),
so the CLI and the API refuse exactly the same input with the same messages.
Every error, FastAPI's own included, is ``{"detail": ..., "field": ...}``.

Modules: ``app`` (create_app), ``deps`` (shared resources, auth, parameters),
``models`` (OpenAPI models), ``errors`` (handlers), ``limits`` (body size),
and one router per area: ``schedules``, ``runs``, ``ops``.
"""

from scout_tasks.api.app import create_app

__all__ = ["create_app"]
