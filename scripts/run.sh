#!/usr/bin/env bash
# Builds a custom caddy with the messenger module (xcaddy) and runs it with
# Caddyfile.example. By default the server uses its embedded store (an SQLite file in
# Caddy's data directory) and keeps codes and rate limits in memory: nothing else is
# needed. With MESSENGER_BACKEND=mysql it installs and starts MariaDB and Redis when
# missing, creates the database `messenger` with the user messenger/messenger, and points
# the server at both. Extra arguments go to `caddy run`. Set MESIBO_APP_TOKEN to log in
# for real.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/services.sh

need_go
if [ "${MESSENGER_BACKEND:-embedded}" = mysql ]; then
	ensure_services
	ensure_database messenger
	export MESSENGER_DSN="${MESSENGER_DSN:-messenger:messenger@tcp(127.0.0.1:3306)/messenger}"
	export MESSENGER_REDIS="${MESSENGER_REDIS:-redis://127.0.0.1:6379/0}"
fi

if [ -z "${MESIBO_APP_TOKEN:-}" ]; then
	# The module refuses to start without an app token (a production config must not run
	# without one); for a first look, a placeholder lets everything up to mesibo work.
	echo "MESIBO_APP_TOKEN is not set: using a placeholder; code checks will answer BADAPP until you set your app token." >&2
	export MESIBO_APP_TOKEN=placeholder-set-MESIBO_APP_TOKEN
fi

go run github.com/caddyserver/xcaddy/cmd/xcaddy@v0.4.5 build v2.11.9 \
	--with github.com/caddy-messenger/messenger@v0.0.0=. --output ./caddy
mkdir -p "${MESSENGER_DATA:-./data}/files" "${MESSENGER_DATA:-./data}/thumbs"
exec ./caddy run --config Caddyfile.example --adapter caddyfile "$@"
