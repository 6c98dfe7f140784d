"""The peer for ``bench/peer.py``: django-celery-beat's DatabaseScheduler firing a Celery task.

A minimal Django project (``settings``), one model (``models.PeerRun``, a
``scout_runs``-like table), and a Celery app whose task does what a scout-tasks
fire does: insert the run (one per schedule and slot) and publish its
``scout.trigger`` event with a publisher confirm. Everything is configured from
the environment ``peer.py`` sets: ``PEER_DATABASE_URL``, ``PEER_BROKER_URL``,
``PEER_EXCHANGE`` and ``PEER_TASK_QUEUE``.
"""
