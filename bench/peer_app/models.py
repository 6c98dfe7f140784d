"""A ``scout_runs``-like table: one run per schedule and slot, whatever races."""

from __future__ import annotations

import uuid

from django.db import models


class PeerRun(models.Model):
    id = models.UUIDField(primary_key=True, default=uuid.uuid4)
    trigger_type = models.CharField(max_length=50)
    triggered_by = models.CharField(max_length=255, null=True)
    source = models.CharField(max_length=255)
    max_strategies = models.IntegerField()
    status = models.CharField(max_length=50, default="pending")
    schedule_id = models.UUIDField(null=True)
    scheduled_for = models.DateTimeField(null=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        db_table = "peer_runs"
        constraints = [
            models.UniqueConstraint(fields=["schedule_id", "scheduled_for"], name="peer_runs_slot")
        ]
