#!/usr/bin/env bash
# docker-compose.yml's RabbitMQ: the image's own entrypoint, plus the Scout
# agents' user (agent-user.sh) created once the server answers. The healthcheck
# waits for the marker file, so nothing that depends on RabbitMQ starts before
# the user exists.
set -euo pipefail

marker=/tmp/scout-agent-user.done
rm -f "$marker"
(
    # The server's Erlang cookie, whoever runs this (root here, rabbitmq there).
    export HOME=/var/lib/rabbitmq
    until rabbitmqctl -q await_startup --timeout 30 >/dev/null 2>&1; do sleep 2; done
    if bash /scout/agent-user.sh; then
        touch "$marker"
    else
        echo "scout: creating the agents' RabbitMQ user failed" >&2
    fi
) &

exec docker-entrypoint.sh "$@"
