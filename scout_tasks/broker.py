"""Broker URLs and kombu transport options, and the fixed ``filesystem://`` transport.

Production is RabbitMQ (``amqp://``): its URL needs no options. The embedded
default of ``scout-tasks dev`` routes events through kombu's ``filesystem://``
transport, which delivers a message published to a topic exchange in one
process to a queue bound in another. Its URL names the folder
(``filesystem://localhost/abs/path/.scout/broker``), and
:func:`broker_transport_options` derives kombu's options from it, so any
process that has the URL can connect without anything else being passed.

The filesystem transport is for one host and development: it never fsyncs, a
fetched message is gone before it is acknowledged, consuming slows as a queue's
backlog grows, each process caches the exchanges it declared (a publisher that
did not declare the exchange drops messages silently), and deleting the control
folder under a running process loses messages. kombu's own filesystem channel
can also hand a consumer a message that is still being written
(celery/kombu#1551), which kills a worker; :class:`FilesystemTransport` fixes
that. :func:`use_fixed_filesystem_transport` makes ``filesystem://`` mean it;
:func:`broker_transport_options` calls it for every filesystem URL, and every
scout-tasks process asks for the options before it connects.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import shutil
import time
import uuid
from pathlib import Path
from queue import Empty
from typing import Any
from urllib.parse import quote, unquote, urlsplit

from kombu import transport as kombu_transports
from kombu.exceptions import ChannelError
from kombu.transport import filesystem
from kombu.utils.encoding import bytes_to_str, str_to_bytes
from kombu.utils.json import dumps, loads

from scout_tasks.errors import ConfigurationError

__all__ = [
    "Empty",
    "FilesystemChannel",
    "FilesystemTransport",
    "broker_transport_options",
    "filesystem_url",
    "is_filesystem_url",
    "prune_broker",
    "use_fixed_filesystem_transport",
]

log = logging.getLogger(__name__)

FILESYSTEM_SCHEME = "filesystem"
# How often a consumer of the filesystem broker looks for new files; kombu's
# default (1 s) would make every event and task up to a second late.
POLLING_INTERVAL = 0.1


def filesystem_url(folder: Path) -> str:
    """``filesystem://localhost/abs/folder``: the URL says where the files are.

    kombu reads the transport's folders from ``transport_options`` only; putting
    the root in the URL lets every process that has the URL derive them (see
    :func:`broker_transport_options`), so nothing else has to be passed around.
    The host is only there to spare every process kombu's "no hostname" warning.
    """
    return f"{FILESYSTEM_SCHEME}://localhost{quote(str(folder))}"


def is_filesystem_url(url: str) -> bool:
    return url.split("://", 1)[0].lower() == FILESYSTEM_SCHEME


def use_fixed_filesystem_transport() -> None:
    """Make ``filesystem://`` mean :class:`FilesystemTransport` in this process.

    The URL stays the standard one any kombu client (an agent) understands;
    only this process's choice of implementation changes. Idempotent.
    """
    kombu_transports.TRANSPORT_ALIASES[FILESYSTEM_SCHEME] = f"{__name__}:FilesystemTransport"


def broker_transport_options(url: str) -> dict[str, Any]:
    """kombu/Celery ``transport_options`` for ``url``: empty unless it is ``filesystem://``.

    For a filesystem URL, its path is the broker's root, holding ``queue/``
    (the messages, one file each) and ``control/`` (each exchange's bindings);
    they are created if missing, because kombu requires them to exist. It also
    installs the fixed transport (:func:`use_fixed_filesystem_transport`), since
    the caller is about to connect with this URL.
    """
    if not is_filesystem_url(url):
        return {}
    root = unquote(urlsplit(url).path)
    if not root or root == "/" or not os.path.isabs(root):
        raise ConfigurationError(
            "SCOUT_BROKER_URL: a filesystem:// broker needs its folder as an absolute path, "
            "e.g. filesystem://localhost/srv/scout/broker"
        )
    use_fixed_filesystem_transport()
    queue, control = Path(root) / "queue", Path(root) / "control"
    for folder in (queue, control):
        folder.mkdir(parents=True, exist_ok=True)
    return {
        "data_folder_in": str(queue),
        "data_folder_out": str(queue),
        "control_folder": str(control),
        "polling_interval": POLLING_INTERVAL,
    }


class FilesystemChannel(filesystem.Channel):
    """kombu's filesystem channel, without its torn reads (celery/kombu#1551).

    kombu creates a message file, then locks and writes it, while a consumer
    renames any file it lists and reads it without a lock: a consumer polling
    at the wrong moment reads an empty message and the worker dies on the JSON
    error (seen here with a beat tick, within minutes). Here a message is
    written under a name no consumer matches and renamed into place, and a
    consumer skips a file that is empty or locked (a stock kombu publisher,
    such as an agent's, still writing it). An undecodable message is set aside
    as ``<name>.bad`` and logged instead of killing the consumer.
    """

    def _put(self, queue: str, payload: Any, **kwargs: Any) -> None:
        name = f"{round(time.monotonic() * 1000)}_{uuid.uuid4()}.{queue}.msg"
        final = os.path.join(self.data_folder_out, name)
        # Ends in ".part": never a "<queue>.msg" any consumer looks for.
        partial = os.path.join(self.data_folder_out, f"{uuid.uuid4()}.part")
        try:
            with open(partial, "wb", buffering=0) as out:
                out.write(str_to_bytes(dumps(payload)))
            os.replace(partial, final)
        except OSError as exc:
            with contextlib.suppress(OSError):
                os.unlink(partial)
            raise ChannelError(f"Cannot add file {final!r} to directory") from exc

    def _get(self, queue: str) -> Any:
        wanted = f"{queue}.msg"
        for name in sorted(os.listdir(self.data_folder_in)):
            if name.partition(".")[2] != wanted:
                continue
            source = os.path.join(self.data_folder_in, name)
            if not _written(source):
                continue
            # Taken by a rename in the same folder (kombu moves it to the temp
            # folder, a copy when that is another file system): atomic, so of
            # two consumers exactly one wins, and nothing leaves the folder.
            taken = f"{source}.{uuid.uuid4().hex}.taken"
            try:
                os.rename(source, taken)
            except OSError:
                continue
            with open(taken, "rb") as message:
                payload = message.read()
            try:
                decoded = loads(bytes_to_str(payload))
            except ValueError:
                os.replace(taken, f"{source}.bad")
                log.warning(
                    "undecodable message for %s set aside as %s.bad",
                    queue,
                    source,
                    extra={"action": "broker.bad_message", "queue": queue, "path": source},
                )
                continue
            if self.store_processed:
                shutil.move(taken, os.path.join(self.processed_folder, name))
            else:
                os.unlink(taken)
            return decoded
        raise Empty()


class FilesystemTransport(filesystem.Transport):
    """kombu's filesystem transport with :class:`FilesystemChannel`."""

    Channel = FilesystemChannel


def _written(path: str) -> bool:
    """Whether a message file is complete: not empty, and no writer holds its lock."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        return os.fstat(fd).st_size > 0
    except OSError:
        return False
    finally:
        os.close(fd)  # releases the lock


def prune_broker(url: str, *, older_than: float = 60.0, now: float | None = None) -> int:
    """Delete the Celery event messages nobody will read; returns how many files.

    A monitor such as Flower leaves its ``celeryev.*`` queue bound when it exits
    (the transport cannot expire queues), and the worker's heartbeats and task
    events would pile up there, slowing every consumer of the folder. Celery
    gives those events a few seconds to live; a minute is generous.
    """
    if not is_filesystem_url(url):
        return 0
    folder = Path(broker_transport_options(url)["data_folder_in"])
    limit = (time.time() if now is None else now) - older_than
    removed = 0
    for path in folder.iterdir():
        if ".celeryev." not in path.name:
            continue
        with contextlib.suppress(FileNotFoundError):
            if path.stat().st_mtime < limit:
                path.unlink()
                removed += 1
    return removed
