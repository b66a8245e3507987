#!/bin/sh
# A [notify] command that posts bkp's event to a webhook: a Slack-compatible body
# ({"text": …}) with the whole event alongside. bkp runs it with the event as JSON
# on stdin and a scrubbed environment, so the URL comes from a file, not from bkp:
#
#   [notify]
#   command = ["/usr/local/lib/bkp/notify-webhook.sh", "/etc/bkp/webhook-url"]
#
# Needs curl and jq. A non-zero exit is reported by bkp and never fails the backup.
set -eu
url="$(cat "$1")"
jq -c '{text: ("bkp \(.operation) on \(.host): \(.event) (exit \(.exit_code) \(.code)): \(.message)"), bkp: .}' |
  curl --silent --show-error --fail --max-time 20 \
    --header 'Content-Type: application/json' --data-binary @- "$url"
