#!/usr/bin/env bash
# The RabbitMQ user the Scout agents connect as, limited to the events exchange:
# it may declare the exchange and its own queues (scout-agent.*), bind them for
# scout.trigger and scout.cancelled only, and publish only scout.started,
# scout.progress, scout.completed and scout.failed. scout-tasks itself and the
# management UI use the broker's own (admin) user.
#
# Idempotent: run again, it sets the same permissions and the current password.
# Environment: SCOUT_AGENT_USER, SCOUT_AGENT_PASSWORD (required),
# SCOUT_AGENT_VHOST (default /), SCOUT_EXCHANGE (default scout),
# SCOUT_AGENT_QUEUE_PREFIX (default scout-agent), RABBITMQCTL (default rabbitmqctl).
set -euo pipefail

user="${SCOUT_AGENT_USER:?SCOUT_AGENT_USER is required}"
password="${SCOUT_AGENT_PASSWORD:?SCOUT_AGENT_PASSWORD is required}"
vhost="${SCOUT_AGENT_VHOST:-/}"
exchange="${SCOUT_EXCHANGE:-scout}"
prefix="${SCOUT_AGENT_QUEUE_PREFIX:-scout-agent}"
ctl="${RABBITMQCTL:-rabbitmqctl}"

# Names become regular expressions: escape what regex syntax would read.
quote() { printf '%s' "$1" | sed -e 's/[][\.*^$+?(){}|/]/\\&/g'; }
ex="$(quote "$exchange")"
qp="$(quote "$prefix")"

# The password goes on stdin: not in the process list, and not through the
# command line, where rabbitmqctl mangles a "$" (the login then fails).
if "$ctl" -q list_users | cut -f1 | grep -qxF -- "$user"; then
    printf '%s' "$password" | "$ctl" -q change_password -- "$user"
else
    printf '%s' "$password" | "$ctl" -q add_user -- "$user"
fi
# No tags: no management UI login, no policies.
"$ctl" -q set_user_tags "$user"

# configure: declare the exchange and the agent's own queues;
# write: publish to the exchange, bind the agent's queues;
# read: bind from the exchange, consume the agent's queues.
resources="^(${ex}|${qp}\\..*)\$"
"$ctl" -q set_permissions -p "$vhost" -- "$user" "$resources" "$resources" "$resources"

# Topic permissions on the exchange: which routing keys the agent may publish
# (write) and bind its queues to (read).
"$ctl" -q set_topic_permissions -p "$vhost" -- "$user" "$exchange" \
    '^scout\.(started|progress|completed|failed)$' \
    '^scout\.(trigger|cancelled)$'
