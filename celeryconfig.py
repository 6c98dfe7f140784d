"""Optional Celery overrides, read when ``celery -A scout_tasks`` runs from this folder.

scout-tasks works without this file; its settings come from the SCOUT_*
environment variables. Put Celery settings here only to change Celery itself,
for example the worker's concurrency or log format.
"""

# worker_concurrency = 2
# worker_max_tasks_per_child = 1000
