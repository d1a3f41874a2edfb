#!/usr/bin/env bash
# A fleet on this machine, to try by hand: three instances of a built caddy (./caddy, or
# $CADDY; ./scripts/run.sh builds one) running scripts/fleet/instance.Caddyfile, behind a
# fourth running scripts/fleet/balancer.Caddyfile (round robin, health checks), on one
# MariaDB database (messenger_fleet), one Redis, and one storage they all share: a folder
# (file://, as a shared volume would be), or FLEET_STORAGE, e.g. an s3:// URL with
# AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY set (docs/storage.md). Without
# MESIBO_APP_TOKEN, mesibo is the tests' fake (internal/cmd/fakemesibo), answering after
# MESIBO_LATENCY (default 100ms). TestFleet runs the same balancer in CI. Ctrl-C stops all;
# the logs stay in /tmp/messenger-fleet.*.
#
#   ./scripts/fleet.sh
#   curl -si -d op=login -d phone=+919812345678 -d appid=x http://localhost:8080/api.php
#       (X-Fleet-Upstream says which instance answered; the code is in its log)
#   kill -9 PID     (an instance's: the balancer routes around it, docs/operations.md#fleet)
#
# Environment: CADDY, FLEET_PORT (8080, the balancer; the instances take the next three,
# the fake mesibo +9, the admin endpoints +10 to +13), FLEET_STORAGE, MESIBO_APP_TOKEN,
# MESIBO_LATENCY, MESSENGER_OTP_SECRET (made up when unset).
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/services.sh

CADDY=${CADDY:-./caddy}
[ -x "$CADDY" ] || { echo "no caddy binary at $CADDY: build one with ./scripts/run.sh, or set CADDY" >&2; exit 1; }
PORT=${FLEET_PORT:-8080}
WORK=$(mktemp -d /tmp/messenger-fleet.XXXXXX)
PIDS=()
stop() { for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done; wait; }
trap stop EXIT
trap 'exit 130' INT TERM

ensure_services
ensure_database messenger_fleet

# What every instance must share (docs/operations.md#fleet).
export MESSENGER_DSN="messenger:messenger@tcp(127.0.0.1:3306)/messenger_fleet"
export MESSENGER_REDIS="redis://127.0.0.1:6379/0"
export MESSENGER_OTP_SECRET="${MESSENGER_OTP_SECRET:-$(head -c 24 /dev/urandom | base64)}"
export FLEET_STORAGE="${FLEET_STORAGE:-file://$WORK/storage}"
export FLEET_URL="http://localhost:$PORT"
if [ -z "${MESIBO_APP_TOKEN:-}" ]; then
	need_go
	go build -o "$WORK/fakemesibo" ./internal/cmd/fakemesibo
	export MESIBO_APP_TOKEN=fleet-app-token MESIBO_ENDPOINT="http://127.0.0.1:$((PORT + 9))/backend/"
	"$WORK/fakemesibo" -addr "127.0.0.1:$((PORT + 9))" -token "$MESIBO_APP_TOKEN" -latency "${MESIBO_LATENCY:-100ms}" \
		>"$WORK/fakemesibo.log" 2>&1 &
	PIDS+=($!)
fi

upstreams=""
for i in 1 2 3; do
	FLEET_INSTANCE_PORT=$((PORT + i)) CADDY_ADMIN="localhost:$((PORT + 10 + i))" XDG_CONFIG_HOME="$WORK/instance$i" \
		XDG_DATA_HOME="$WORK/instance$i" "$CADDY" run --config scripts/fleet/instance.Caddyfile --adapter caddyfile \
		>"$WORK/instance$i.log" 2>&1 &
	PIDS+=($!)
	echo "instance $i: pid $!, http://127.0.0.1:$((PORT + i)), log $WORK/instance$i.log"
	upstreams+=" 127.0.0.1:$((PORT + i))"
done
FLEET_SITE="$FLEET_URL" FLEET_UPSTREAMS="$upstreams" CADDY_ADMIN="localhost:$((PORT + 10))" XDG_CONFIG_HOME="$WORK/balancer" \
	XDG_DATA_HOME="$WORK/balancer" "$CADDY" run --config scripts/fleet/balancer.Caddyfile --adapter caddyfile \
	>"$WORK/balancer.log" 2>&1 &
PIDS+=($!)
echo "balancer: pid $!, $FLEET_URL, log $WORK/balancer.log; storage $FLEET_STORAGE"
wait
