"""What the broker said about the messages published on one confirm-mode channel.

Delivery tags number one channel's publishes from 1, so a verdict means
nothing on any other channel: each channel gets its own :class:`ConfirmState`,
made with it and dropped with it, and a reconnect starts from a clean slate.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

log = logging.getLogger(__name__)


@dataclass(slots=True)
class PublishResult:
    confirmed: set[str] = field(default_factory=set)
    # Nacked by the broker or returned as unroutable: try again later.
    rejected: dict[str, str] = field(default_factory=dict)


class ConfirmState:
    """What the broker has said about the messages published on ONE confirm-mode channel.

    RabbitMQ numbers a channel's publishes 1, 2, 3... from ``confirm.select``
    and answers each exactly once: ``basic.ack`` or ``basic.nack``, either of
    which may settle every outstanding tag up to its own at once
    (``multiple``). A ``mandatory`` message that no queue would receive first
    comes back as ``basic.return`` (which names no tag, only the message), and
    is then acked like any other: the return is what says "not delivered".

    A new channel gets a new instance with the callbacks bound to it, so
    nothing settled on one connection can count on the next, and a late
    callback from an abandoned channel only touches its own, orphaned, state.
    """

    def __init__(self) -> None:
        self._next_tag = 1
        # tag -> message_id, in tag order, until the broker's ack or nack.
        self._pending: dict[int, str] = {}
        # Pending tags already returned; their ack then settles them as rejected.
        self._returned: dict[int, str] = {}
        # tag -> None (delivered) or why not, until the batch collects them.
        self._settled: dict[int, str | None] = {}

    @classmethod
    def attach(cls, channel: Any) -> ConfirmState:
        """Put ``channel`` in confirm mode and bind a fresh state's callbacks to it."""
        state = cls()
        channel.confirm_select()
        channel.events["basic_ack"].add(state.on_ack)
        channel.events["basic_nack"].add(state.on_nack)
        channel.events["basic_return"].add(state.on_return)
        return state

    def published(self, message_id: str) -> int:
        """Record a message handed to the channel; returns the tag the broker gives it."""
        tag = self._next_tag
        self._next_tag += 1
        self._pending[tag] = message_id
        return tag

    def settled(self, tag: int) -> bool:
        return tag in self._settled

    def collect(self, tags: dict[int, str]) -> PublishResult:
        """The verdicts on ``tags`` (all settled), forgotten once read."""
        result = PublishResult()
        for tag, message_id in tags.items():
            reason = self._settled.pop(tag)
            if reason is None:
                result.confirmed.add(message_id)
            else:
                result.rejected[message_id] = reason
        return result

    # -- the channel's callbacks -------------------------------------------------

    def on_ack(self, delivery_tag: int, multiple: bool) -> None:
        for tag in self._covered(delivery_tag, multiple):
            self._settled[tag] = self._returned.pop(tag, None)

    def on_nack(self, delivery_tag: int, multiple: bool) -> None:
        for tag in self._covered(delivery_tag, multiple):
            returned = self._returned.pop(tag, None)
            self._settled[tag] = returned or "nacked by the broker"

    def on_return(self, exc: Exception, exchange: str, routing_key: str, message: Any) -> None:
        message_id = str(message.properties.get("message_id") or "")
        # The broker sends the return just before the message's own ack, so it
        # is the oldest pending, not yet returned, message with this id.
        for tag, pending_id in self._pending.items():
            if pending_id == message_id and tag not in self._returned:
                self._returned[tag] = f"returned by the broker: {exc}"
                return
        log.warning(
            "broker returned a message this channel is not waiting for",
            extra={
                "action": "publisher.unknown_return",
                "message_id": message_id,
                "routing_key": routing_key,
            },
        )

    def _covered(self, delivery_tag: int, multiple: bool) -> list[int]:
        """The pending tags one ack or nack settles, removed from pending."""
        if multiple:
            # Pending is in tag order: stop at the first tag past the verdict's.
            tags = []
            for tag in self._pending:
                if tag > delivery_tag:
                    break
                tags.append(tag)
        else:
            # A tag settled already or never published here: nothing to settle.
            tags = [delivery_tag] if delivery_tag in self._pending else []
        for tag in tags:
            del self._pending[tag]
        return tags
