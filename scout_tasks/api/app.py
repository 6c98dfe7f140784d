"""The application: resources, error handlers, the body-size limit, the routers.

Routes are plain ``def`` functions: SQLAlchemy and kombu block, so they run in
the threadpool. The one publisher per app is shared by those threads and
therefore serialised by a lock (:class:`scout_tasks.shared_publisher.SharedPublisher`).

``/docs`` and ``/redoc`` load Swagger UI and ReDoc from the ``fastapi-offline``
package's static files, served by this app, so they work without internet.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from importlib.metadata import PackageNotFoundError, version

from fastapi import FastAPI
from fastapi_offline import FastAPIOffline

from scout_tasks import console, db, migrate
from scout_tasks.api import errors, metrics, operate, ops, runs, schedules
from scout_tasks.api.deps import Scout
from scout_tasks.api.limits import BodySizeLimit
from scout_tasks.settings import Settings, get_settings

DOCS_ASSETS = "/docs-assets"


def _version() -> str:
    try:
        return version("scout-tasks")
    except PackageNotFoundError:
        return "0"


def create_app(settings: Settings | None = None) -> FastAPI:
    """The API for ``settings`` (default: the process's), as ``uvicorn --factory`` wants."""
    settings = settings or get_settings()
    scout = Scout(settings=settings, engine=db.get_engine(settings.database_url_value()))

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        try:
            yield
        finally:
            scout.close()

    app = FastAPIOffline(
        title="scout-tasks",
        version=_version(),
        description="Cron schedules for Scout runs. See CONTRACT.md, section HTTP API.",
        lifespan=lifespan,
        static_url=DOCS_ASSETS,
    )
    app.state.scout = scout
    # Read from the migration scripts once, here, not on every /readyz.
    migrate.head_revision()
    # Built once: its collector reads the database on every scrape.
    app.state.metrics_registry = metrics.make_registry(scout.engine)
    errors.install(app)
    app.add_middleware(BodySizeLimit)
    # Before schedules: its /apply must not be read as /{id}.
    app.include_router(operate.router)
    app.include_router(schedules.router)
    app.include_router(runs.router)
    app.include_router(ops.router)
    # The operator console at /ui: one more face of the same service layer.
    console.install(app, settings)
    return app
