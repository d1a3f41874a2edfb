#!/usr/bin/env bash
# Config reloads under load: starts the setup of load.sh (MariaDB, Redis, the mesibo fake,
# the built caddy), runs getcontacts-0 at a steady open-loop rate while it reloads the
# config through the admin API (POST /load, a different invite text each time, checked in
# the answers), and reports failed requests, MariaDB connections and caddy's goroutines
# before and after. Exits non-zero if a request failed, the server's connections grew by
# more than 5, or its goroutines by more than 20%. Everything it started is stopped.
#
#   ./scripts/reload.sh
#   RATE=200 RELOADS=20 ./scripts/reload.sh
#
# Environment: RATE (requests/s, default 100), RELOADS (default 10), RELOAD_INTERVAL
# (seconds between reloads, default 2), LOAD_H2C=1 (speak HTTP/2 without TLS instead of
# HTTP/1.1), STRICT=1 (no resending, see below), CADDY and the ports as for load.sh.
#
# Over HTTP/1.1 a reload can kill a request that a client sends on a kept-alive connection
# at the moment the old server closes that connection as idle (EOF / connection reset,
# no answer): a race of Go's http.Server.Shutdown that a plain `respond` site shows too.
# Browsers and OkHttp resend such a request on a new connection; loadgen does the same
# here (-retry-reused) and reports how many it resent. HTTP/2 closes with GOAWAY instead.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/services.sh
. scripts/load.sh

RATE=${RATE:-100}
RELOADS=${RELOADS:-10}
RELOAD_INTERVAL=${RELOAD_INTERVAL:-2}

sql() { mariadb -h127.0.0.1 -umessenger_load -pmessenger_load -N -e "$1"; }
threads_connected() { sql "SHOW GLOBAL STATUS LIKE 'Threads_connected'" | cut -f2; }
# The server's own connections (its database user), not counting this query's.
server_connections() {
	sql "SELECT COUNT(*) FROM information_schema.PROCESSLIST WHERE USER = 'messenger_load' AND ID != CONNECTION_ID()"
}

load_setup

h2c=()
[ "${LOAD_H2C:-0}" = 1 ] && h2c=(-h2c)
retry=(-retry-reused)
[ "${STRICT:-0}" = 1 ] && retry=()
# Warm up with every connection, so that the database pool has grown to what the load
# needs before the first count, then count with the server idle (no client connection
# open): what stays is the server's own (pools, workers), which is what a leak grows.
log "warm-up: getcontacts-0, 32 connections, 3s"
"$LOAD_WORK/loadgen" -url "$LOAD_URL" -case getcontacts-0 -d 3s -c 32 -warmup 0 -max 60s "${h2c[@]}" >&2 ||
	die "warm-up failed"
sleep 3
conn_before=$(server_connections)
threads_before=$(threads_connected)
gor_before=$(goroutines)
rss_before=$(caddy_rss_mb)
[ -n "$gor_before" ] || die "could not read caddy's goroutine count from $LOAD_ADMIN/debug/pprof/goroutine"
log "before (idle): server connections $conn_before (Threads_connected $threads_before), goroutines $gor_before, RSS ${rss_before} MB"

warm=3
total=$((warm + RELOADS * RELOAD_INTERVAL + 3))
log "steady load: getcontacts-0 at $RATE req/s open loop for ${total}s; $RELOADS reloads every ${RELOAD_INTERVAL}s after ${warm}s"
"$LOAD_WORK/loadgen" -url "$LOAD_URL" -case getcontacts-0 -rate "$RATE" -d "${total}s" -c 32 -warmup 0 \
	-max "$((total + 60))s" "${h2c[@]}" "${retry[@]}" >"$LOAD_WORK/reload-load.txt" 2>&1 &
LG_PID=$!
LOAD_PIDS+=("$LG_PID")
sleep "$warm"

token=$(printf 'loadtoken%055d' 1)
reload_failures=0
for i in $(seq "$RELOADS"); do
	text="Load test invite $i"
	load_caddyfile "$text" >"$LOAD_WORK/Caddyfile.$i"
	t0=$(date +%s%N)
	code=$(curl -s -m 30 -o "$LOAD_WORK/reload.$i.out" -w '%{http_code}' -X POST "$LOAD_ADMIN/load" \
		-H 'Content-Type: text/caddyfile' --data-binary "@$LOAD_WORK/Caddyfile.$i") || code=000
	took=$((($(date +%s%N) - t0) / 1000000))
	# The new config must be the one answering.
	if [ "$code" = 200 ] && curl -s -m 5 -d op=getgroup -d "token=$token" -d gid=1 "$LOAD_URL" | grep -q "\"invite\":\"$text\""; then
		log "reload $i: OK in ${took} ms, answers carry \"$text\"; server connections $(server_connections), goroutines $(goroutines)"
	else
		reload_failures=$((reload_failures + 1))
		log "reload $i: FAILED (HTTP $code, ${took} ms): $(head -c 300 "$LOAD_WORK/reload.$i.out")"
	fi
	sleep "$RELOAD_INTERVAL"
done

for _ in $(seq $((total * 2 + 120))); do kill -0 "$LG_PID" 2>/dev/null || break; sleep 0.5; done
wait "$LG_PID" || true
line=$(grep '^case=' "$LOAD_WORK/reload-load.txt" || true)
echo "$line" >&2
failures=$(field failures "$line")
retried=$(field retried "$line")
[ -n "$failures" ] || { cat "$LOAD_WORK/reload-load.txt" >&2; failures=1; }

sleep 3 # the client's connections are closed; let the server notice
conn_after=$(server_connections)
threads_after=$(threads_connected)
gor_after=$(goroutines)
rss_after=$(caddy_rss_mb)
log "after (idle): server connections $conn_after (Threads_connected $threads_after), goroutines $gor_after, RSS ${rss_after} MB"
errors=$(grep -c '"level":"error"' "$LOAD_WORK/caddy.log" || true)

echo
echo "| idle, before and after the reloads | before | after |"
echo "|---|---:|---:|"
echo "| server's MariaDB connections (PROCESSLIST, user messenger_load) | $conn_before | $conn_after |"
echo "| Threads_connected (all clients of this MariaDB) | $threads_before | $threads_after |"
echo "| caddy goroutines | $gor_before | $gor_after |"
echo "| caddy RSS MB | $rss_before | $rss_after |"
echo
echo "$RELOADS reloads ($reload_failures failed) during getcontacts-0 at $RATE req/s open loop ($([ ${#h2c[@]} = 0 ] && echo HTTP/1.1 || echo HTTP/2 h2c)):" \
	"$(field requests "$line") requests, $failures failed, ${retried:-0} resent, p50 $(field p50_ms "$line") ms, p99 $(field p99_ms "$line") ms, max $(field max_ms "$line") ms."
[ ${#retry[@]} = 0 ] || echo "Resent: requests whose kept-alive connection the reload closed before any answer, sent once more on a new connection as browsers and OkHttp do (STRICT=1 counts them as failed)."
echo "caddy logged $errors errors."
if [ "$errors" != 0 ]; then
	grep '"level":"error"' "$LOAD_WORK/caddy.log" | sed -n 's/.*"msg":"\([^"]*\)".*/\1/p' | sort | uniq -c | sort -rn | head -5
fi
[ "$failures" = 0 ] || echo "failures: $(sed -n 's/.*failure_samples=//p' <<<"$line")"

status=0
if [ "$failures" != 0 ] || [ "$reload_failures" != 0 ]; then
	echo "FAIL: $failures requests and $reload_failures reloads failed"
	status=1
fi
if [ "$conn_after" -gt $((conn_before + 5)) ]; then
	echo "FAIL: the server's MariaDB connections grew from $conn_before to $conn_after"
	status=1
fi
if [ "$gor_after" -gt $((gor_before * 120 / 100)) ]; then
	echo "FAIL: caddy's goroutines grew from $gor_before to $gor_after (more than 20%)"
	status=1
fi
[ "$status" = 0 ] && echo "PASS"
exit "$status"
