#!/usr/bin/env bash
# Load test of the messenger API on this machine: starts MariaDB and Redis (services.sh),
# a fresh database `messenger_load`, the mesibo fake (internal/cmd/fakemesibo) and the
# built caddy with a generated Caddyfile (rate limits raised out of the way, codes sent to
# a webhook receiver inside loadgen), seeds users/contacts/a group, runs every case of
# tools/loadgen and prints a Markdown table and the machine. Everything it started
# is stopped on exit; every wait is bounded.
#
#   ./scripts/load.sh                       # all cases, 10s each, 32 connections
#   DURATION=30s CONNS=64 ./scripts/load.sh getcontacts-0 profile
#
# Environment:
#   CADDY        caddy binary to use (default ./caddy, rebuilt with xcaddy when missing or
#                older than a source file)
#   DURATION     per case (default 10s)          CONNS  connections (default 32)
#   SQL_REQUESTS sequential requests for the SQL-statements count (default 200)
#   HALF_RATE    1 (default): also measure p99 open-loop at half the measured req/s
#   PROFILE      a folder: save a CPU profile of caddy during each case's measured run there
#                (cpu-CASE.pprof; read with go tool pprof -top CADDY FILE)
#   QUIET_WAIT   seconds to wait at most for the machine to be otherwise idle (<10% busy) (0)
#   MESIBO_LATENCY  delay of every answer of the mesibo fake, like the remote service (0s)
#   KEEP_WORK    1: keep the work folder (Caddyfile, caddy.log) in /tmp/messenger-load.*
#   WRK          1 (default): also measure each token case with wrk, 2 threads and CONNS
#                connections (installed from Debian's packages when missing), as the
#                issue's reference figures were; 0: loadgen only
#   LOAD_DB_CONNS  the server's max_db_connections (default: the module's, 32)
#   LOAD_DSN     the server's database (default: through /run/mysqld/mysqld.sock when it
#                exists, else 127.0.0.1:3306)
#   LOAD_PORT, LOAD_ADMIN_PORT, LOAD_MESIBO_PORT, LOAD_HOOK_PORT (18080, 12019, 18081, 18090)
# To count SQL statements per database user, the user messenger_load gets the PROCESS
# privilege and MariaDB's userstat is switched on for the run (and back off after, if it
# was off). The database messenger_load is dropped at the next run, not at the end.
# Sourced by reload.sh for the setup (load_setup, load_teardown).

LOAD_PORT=${LOAD_PORT:-18080}
LOAD_ADMIN_PORT=${LOAD_ADMIN_PORT:-12019}
LOAD_MESIBO_PORT=${LOAD_MESIBO_PORT:-18081}
LOAD_HOOK_PORT=${LOAD_HOOK_PORT:-18090}
LOAD_DB=messenger_load
# MariaDB's unix socket when there is one: on one host it costs less per statement than
# loopback TCP (as PHP's mysqli uses it for "localhost").
if [ -z "${LOAD_DSN:-}" ] && [ -S /run/mysqld/mysqld.sock ]; then
	LOAD_DSN="messenger_load:messenger_load@unix(/run/mysqld/mysqld.sock)/$LOAD_DB"
fi
LOAD_DSN=${LOAD_DSN:-"messenger_load:messenger_load@tcp(127.0.0.1:3306)/$LOAD_DB"}
LOAD_URL="http://127.0.0.1:$LOAD_PORT/api.php"
LOAD_ADMIN="http://127.0.0.1:$LOAD_ADMIN_PORT"
LOAD_REDIS_PREFIX="loadtest:"
LOAD_APP_TOKEN="load-app-token"
LOAD_WORK=""
LOAD_PIDS=()
LOAD_USERSTAT=""

log() { printf '%s %s\n' "$(date +%T)" "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

port_busy() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# load_caddy_binary sets CADDY, building ./caddy when it is missing or older than a source.
load_caddy_binary() {
	if [ -n "${CADDY:-}" ]; then
		[ -x "$CADDY" ] || die "CADDY=$CADDY is not an executable"
		return
	fi
	CADDY=./caddy
	if [ -x ./caddy ] && [ -z "$(find . -path ./.git -prune -o \( -name '*.go' -o -name '*.sql' -o -name go.mod -o -name go.sum \) -newer ./caddy -print -quit)" ]; then
		return
	fi
	log "building ./caddy with xcaddy (a few minutes) ..."
	timeout 30m go run github.com/caddyserver/xcaddy/cmd/xcaddy@v0.4.5 build v2.11.9 \
		--with github.com/caddy-messenger/messenger@v0.0.0=. --output ./caddy >"$LOAD_WORK/build.log" 2>&1 ||
		{ tail -30 "$LOAD_WORK/build.log" >&2; die "xcaddy build failed"; }
}

# load_caddyfile INVITE_TEXT: the Caddyfile of the load setup.
load_caddyfile() {
	cat <<EOF
{
	admin 127.0.0.1:$LOAD_ADMIN_PORT
	auto_https off
	persist_config off
	grace_period 10s
	storage file_system $LOAD_WORK/storage
	servers {
		protocols h1 h2c
	}
}

http://127.0.0.1:$LOAD_PORT {
	bind 127.0.0.1
	@api path / /api.php
	messenger @api {
		database $LOAD_DSN${LOAD_DB_CONNS:+
		max_db_connections $LOAD_DB_CONNS}
		redis redis://127.0.0.1:6379/0
		redis_key_prefix $LOAD_REDIS_PREFIX
		mesibo {
			endpoint http://127.0.0.1:$LOAD_MESIBO_PORT/backend/
			app_token $LOAD_APP_TOKEN
			timeout 10s
		}
		otp {
			secret load-test-otp-secret
			sender webhook http://127.0.0.1:$LOAD_HOOK_PORT/ {
				timeout 5s
			}
		}
		rate_limit otp_phone 100000 1m
		rate_limit otp_ip 10000000 1m
		rate_limit otp_global 10000000 1m
		files_dir $LOAD_WORK/files
		thumbs_dir $LOAD_WORK/thumbs
		download_url http://127.0.0.1:$LOAD_PORT/files/
		upload_url http://127.0.0.1:$LOAD_PORT/api.php
		invite {
			text "$1"
			subject "Join me on the messenger"
			title "Invite a friend via"
		}
	}
}
EOF
}

# load_clear_redis deletes the keys of the load setup: codes and failure counts under the
# prefix, rate-limit counters under "rate:" + prefix.
load_clear_redis() {
	local pattern
	for pattern in "${LOAD_REDIS_PREFIX}*" "rate:${LOAD_REDIS_PREFIX}*"; do
		timeout 60 bash -c "redis-cli -h 127.0.0.1 --scan --pattern '$pattern' | xargs -r -n 500 redis-cli -h 127.0.0.1 DEL >/dev/null" || true
	done
}

# load_setup: services, database, binaries, the fake, caddy; returns when caddy answers.
load_setup() {
	need_go
	for p in "$LOAD_PORT" "$LOAD_ADMIN_PORT" "$LOAD_MESIBO_PORT" "$LOAD_HOOK_PORT"; do
		port_busy "$p" && die "port $p is in use (set LOAD_*PORT to others)"
	done
	LOAD_WORK=$(mktemp -d /tmp/messenger-load.XXXXXX)
	mkdir -p "$LOAD_WORK/files" "$LOAD_WORK/thumbs" "$LOAD_WORK/storage" "$LOAD_WORK/xdg"
	trap load_teardown EXIT
	trap 'exit 130' INT TERM
	log "work folder $LOAD_WORK"

	ensure_services
	as_root_sql "
DROP DATABASE IF EXISTS $LOAD_DB;
CREATE DATABASE $LOAD_DB CHARACTER SET utf8mb4;
CREATE USER IF NOT EXISTS 'messenger_load'@'localhost' IDENTIFIED BY 'messenger_load';
CREATE USER IF NOT EXISTS 'messenger_load'@'127.0.0.1' IDENTIFIED BY 'messenger_load';
GRANT ALL PRIVILEGES ON $LOAD_DB.* TO 'messenger_load'@'localhost';
GRANT ALL PRIVILEGES ON $LOAD_DB.* TO 'messenger_load'@'127.0.0.1';
GRANT PROCESS ON *.* TO 'messenger_load'@'localhost';
GRANT PROCESS ON *.* TO 'messenger_load'@'127.0.0.1';" || die "creating the database failed"
	# Per-user statement counts (information_schema.USER_STATISTICS), so that the SQL count
	# is not inflated by other programs using this MariaDB; put back as it was on exit.
	LOAD_USERSTAT=$(mariadb -h127.0.0.1 -umessenger_load -pmessenger_load -N -e "SELECT @@GLOBAL.userstat" 2>/dev/null || echo "")
	if [ "$LOAD_USERSTAT" = 0 ]; then
		as_root_sql "SET GLOBAL userstat = 1" || LOAD_USERSTAT=""
	fi
	load_clear_redis

	log "building loadgen and fakemesibo ..."
	go build -C tools -o "$LOAD_WORK/loadgen" ./loadgen || die "building loadgen failed"
	go build -o "$LOAD_WORK/fakemesibo" ./internal/cmd/fakemesibo || die "building fakemesibo failed"
	load_caddy_binary

	"$LOAD_WORK/fakemesibo" -addr "127.0.0.1:$LOAD_MESIBO_PORT" -token "$LOAD_APP_TOKEN" -max 2h -latency "${MESIBO_LATENCY:-0s}" \
		>"$LOAD_WORK/fakemesibo.log" 2>&1 &
	LOAD_PIDS+=($!)
	FAKE_PID=$!

	load_caddyfile "Load test invite 0" >"$LOAD_WORK/Caddyfile"
	XDG_CONFIG_HOME="$LOAD_WORK/xdg" XDG_DATA_HOME="$LOAD_WORK/xdg" \
		"$CADDY" run --config "$LOAD_WORK/Caddyfile" --adapter caddyfile >"$LOAD_WORK/caddy.log" 2>&1 &
	LOAD_PIDS+=($!)
	CADDY_PID=$!

	local i
	for i in $(seq 120); do
		if curl -s -m 2 "$LOAD_URL" 2>/dev/null | grep -q NOOP; then
			break
		fi
		kill -0 "$CADDY_PID" 2>/dev/null || { tail -20 "$LOAD_WORK/caddy.log" >&2; die "caddy exited"; }
		[ "$i" = 120 ] && { tail -20 "$LOAD_WORK/caddy.log" >&2; die "caddy did not answer within 60s"; }
		sleep 0.5
	done
	kill -0 "$FAKE_PID" 2>/dev/null || { cat "$LOAD_WORK/fakemesibo.log" >&2; die "fakemesibo exited"; }
	log "caddy (pid $CADDY_PID) answers on $LOAD_URL; mesibo fake (pid $FAKE_PID)"
	timeout 120 "$LOAD_WORK/loadgen" -url "$LOAD_URL" -dsn "$LOAD_DSN" -seed -max 100s || die "seeding failed"
}

# load_teardown stops what load_setup started (by pid), gracefully, then for good.
load_teardown() {
	local pid i
	for pid in "${LOAD_PIDS[@]}"; do
		kill -TERM "$pid" 2>/dev/null || true
	done
	for pid in "${LOAD_PIDS[@]}"; do
		for i in $(seq 40); do
			kill -0 "$pid" 2>/dev/null || break
			sleep 0.25
		done
		kill -KILL "$pid" 2>/dev/null || true
		wait "$pid" 2>/dev/null || true
	done
	LOAD_PIDS=()
	if [ "${LOAD_USERSTAT:-}" = 0 ]; then
		as_root_sql "SET GLOBAL userstat = 0" || true
		LOAD_USERSTAT=""
	fi
	[ -n "$LOAD_WORK" ] && load_clear_redis
	if [ -n "$LOAD_WORK" ] && [ -d "$LOAD_WORK" ]; then
		if [ "${KEEP_WORK:-0}" = 1 ]; then
			log "logs kept in $LOAD_WORK"
		else
			rm -rf "$LOAD_WORK"
		fi
	fi
}

# wrk_case CASE DURATION CONNS: "req/s p50_ms p99_ms failures" of CASE measured by wrk,
# or nothing for a case wrk cannot run.
wrk_case() {
	local script out
	script="$LOAD_WORK/$1.lua"
	"$LOAD_WORK/loadgen" -case "$1" -wrk-script >"$script" 2>/dev/null || return 0
	out=$(timeout 5m wrk -t2 -c"$3" -d"$2" --latency -s "$script" "$LOAD_URL") || return 0
	echo "$out" >&2
	awk '
		function ms(v) {
			if (v ~ /us$/) return substr(v, 1, length(v) - 2) / 1000
			if (v ~ /ms$/) return substr(v, 1, length(v) - 2) + 0
			if (v ~ /s$/) return substr(v, 1, length(v) - 1) * 1000
			return v
		}
		$1 == "50%" { p50 = ms($2) }
		$1 == "99%" { p99 = ms($2) }
		$1 == "Requests/sec:" { rate = $2 }
		/^wrk_failures=/ { split($0, f, "="); fail = f[2] }
		END { if (rate != "") printf "%s %.2f %.2f %s\n", rate, p50, p99, fail }
	' <<<"$out"
}

# field KEY LINE: the value of KEY=VALUE in a loadgen report line.
field() { tr ' ' '\n' <<<"$2" | sed -n "s|^$1=||p" | head -1; }

caddy_rss_mb() { awk '/VmRSS/ {printf "%.0f", $2/1024}' "/proc/$CADDY_PID/status" 2>/dev/null; }

goroutines() {
	curl -s -m 5 "$LOAD_ADMIN/debug/pprof/goroutine?debug=1" | sed -n 's/^goroutine profile: total \([0-9]*\).*/\1/p'
}

# cpu_busy_pct: how busy all CPUs are over the next second, in %.
cpu_busy_pct() {
	local a b
	a=$(head -1 /proc/stat)
	sleep 1
	b=$(head -1 /proc/stat)
	awk -v a="$a" -v b="$b" 'BEGIN {
		split(a, x); split(b, y); t = 0
		for (i = 2; i <= 9; i++) t += y[i] - x[i]
		idle = (y[5] - x[5]) + (y[6] - x[6])
		printf "%d", (t > 0 ? 100 * (t - idle) / t : 0)
	}'
}

# watch_list: the processes whose CPU use loadgen reports (name=pid,...).
watch_list() {
	local w="caddy=$CADDY_PID,fake=$FAKE_PID,loadgen=self" p
	p=$(pidof mariadbd 2>/dev/null | cut -d' ' -f1) && [ -n "$p" ] && w+=",mariadb=$p"
	p=$(pidof redis-server 2>/dev/null | cut -d' ' -f1) && [ -n "$p" ] && w+=",redis=$p"
	echo "$w"
}

load_main() {
	set -euo pipefail
	cd "$(dirname "${BASH_SOURCE[0]}")/.."
	. scripts/services.sh
	local duration=${DURATION:-10s} conns=${CONNS:-32} sqln=${SQL_REQUESTS:-200} half=${HALF_RATE:-1} use_wrk=${WRK:-1}
	local cases=("$@")
	# The login cases last: otp-verify registers thousands of users at once, which no
	# delta sync of the token cases should see as the last minute's changes.
	[ ${#cases[@]} -gt 0 ] || cases=(getcontacts-0 getcontacts-delta getcontacts-1000 getgroup profile profile-50 otp-request otp-verify)
	KEEP_WORK=${KEEP_WORK:-0}
	if [ "$use_wrk" = 1 ] && ! command -v wrk >/dev/null 2>&1; then
		log "installing wrk ..."
		$SUDO apt-get install -y -qq wrk >/dev/null 2>&1 || { $SUDO apt-get update -qq && $SUDO apt-get install -y -qq wrk >/dev/null; } ||
			die "installing wrk failed (WRK=0 measures with loadgen only)"
	fi
	load_setup
	[ -n "${PROFILE:-}" ] && mkdir -p "$PROFILE"
	local load_before i
	# Optionally wait (bounded) until the machine is otherwise idle: other work on it
	# (a test suite, a build) takes CPU from the servers and lowers every number.
	for i in $(seq "${QUIET_WAIT:-0}"); do
		[ "$(cpu_busy_pct)" -lt 10 ] && break
	done
	load_before=$(cpu_busy_pct)
	[ "$load_before" -ge 25 ] &&
		log "WARNING: the machine is ${load_before}% busy before the run: other work here; the numbers will be low"

	local results=() c line rate hline wline
	for c in "${cases[@]}"; do
		# Let the previous case's aftermath (InnoDB flushing and purge) settle first.
		for i in $(seq 15); do [ "$(cpu_busy_pct)" -lt 15 ] && break; done
		log "case $c: $duration, $conns connections ..."
		local prof=()
		[ -n "${PROFILE:-}" ] && prof=(-cpuprofile "$PROFILE/cpu.pprof" -admin "$LOAD_ADMIN")
		line=$(timeout 15m "$LOAD_WORK/loadgen" -url "$LOAD_URL" -dsn "$LOAD_DSN" -case "$c" -d "$duration" -c "$conns" \
			-sql "$sqln" -redis 127.0.0.1:6379 -hook "127.0.0.1:$LOAD_HOOK_PORT" -max 14m -watch "$(watch_list)" "${prof[@]}") || true
		echo "$line" >&2
		wline=""
		if [ "$use_wrk" = 1 ]; then
			for i in $(seq 15); do [ "$(cpu_busy_pct)" -lt 15 ] && break; done
			log "case $c: wrk, $duration, $conns connections ..."
			wline=$(wrk_case "$c" "$duration" "$conns")
		fi
		hline=""
		rate=$(field 'req/s' "$line")
		if [ "$half" = 1 ] && [ -n "$rate" ] && [ -z "$(field skipped "$line")" ]; then
			local half_rate
			half_rate=$(awk -v r="$rate" 'BEGIN {printf "%d", r/2}')
			if [ "$half_rate" -gt 0 ]; then
				log "case $c: open loop at $half_rate req/s ..."
				hline=$(timeout 15m "$LOAD_WORK/loadgen" -url "$LOAD_URL" -dsn "$LOAD_DSN" -case "$c" -d "$duration" -c "$conns" \
					-rate "$half_rate" -hook "127.0.0.1:$LOAD_HOOK_PORT" -max 14m) || true
				echo "$hline" >&2
			fi
		fi
		results+=("$c|$line|$hline|$wline")
	done

	local mariadb_version redis_version model
	mariadb_version=$(mariadb -h127.0.0.1 -umessenger_load -pmessenger_load -N -e 'SELECT VERSION()' 2>/dev/null || echo '?')
	redis_version=$(redis-cli -h 127.0.0.1 INFO server 2>/dev/null | tr -d '\r' | sed -n 's/^redis_version://p')
	model=$(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -1)
	local errors rss gor
	errors=$(grep -c '"level":"error"' "$LOAD_WORK/caddy.log" || true)
	rss=$(caddy_rss_mb)
	gor=$(goroutines)

	echo
	echo "| case | wrk req/s | wrk p50 / p99 ms | req/s | p50 ms | p99 ms | max ms | failures | p99 ms at ½ rate (open loop) | SQL/request (sequential / under load) | Questions/request | Redis calls/request | CPU caddy / mariadb / redis / loadgen / other / machine |"
	echo "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|"
	local r name l h w wcols wrate wp50 wp99 wfail
	for r in "${results[@]}"; do
		IFS='|' read -r name l h w <<<"$r"
		wcols="- | -"
		if [ -n "$w" ]; then
			read -r wrate wp50 wp99 wfail <<<"$w"
			wcols="$wrate | $wp50 / $wp99"
			[ "${wfail:-0}" != 0 ] && wcols+=" ($wfail not OK)"
		fi
		if [ -n "$(field skipped "$l")" ]; then
			echo "| $name | | | skipped: answers $(field skipped "$l") | | | | | | | | | |"
			continue
		fi
		if [ -n "$(field error "$l")" ] || [ -z "$l" ]; then
			echo "| $name | | | failed: $(sed -n 's/.*error=//p' <<<"$l" | cut -c1-120) | | | | | | | | | |"
			continue
		fi
		local hp99="-"
		[ -n "$h" ] && hp99="$(field p99_ms "$h") @ $(field 'req/s' "$h")/s ($(field failures "$h") fail)"
		echo "| $name | $wcols | $(field 'req/s' "$l") | $(field p50_ms "$l") | $(field p99_ms "$l") | $(field max_ms "$l") | $(field failures "$l") | $hp99 | $(field 'sql_user/req' "$l") / $(field 'sql_load/req' "$l") | $(field 'sql_questions/req' "$l") | $(field 'redis_calls/req' "$l") | $(field cpu_caddy "$l") / $(field cpu_mariadb "$l") / $(field cpu_redis "$l") / $(field cpu_loadgen "$l") / $(field cpu_other "$l") / $(field cpu_machine_busy "$l") |"
	done
	echo
	echo "Machine: $(nproc) CPUs ($model), MariaDB $mariadb_version, Redis $redis_version, $(go version | cut -d' ' -f3), caddy $("$CADDY" version | cut -d' ' -f1)."
	echo "Everything (caddy, MariaDB, Redis, the mesibo fake, loadgen or wrk) shares this machine. $conns connections, $duration per case."
	echo "wrk: 2 threads, every answer checked for \"result\":\"OK\"; the other columns are loadgen's (Go, closed loop; its own CPU use is in the last column)."
	echo "SQL/request: statements of the server's database user (USER_STATISTICS) over $sqln sequential requests, and over the measured run (where outbox-worker rounds are shared); Questions/request: MariaDB's global Questions over the same requests (includes any other client of this MariaDB); Redis calls/request: script calls (EVALSHA; the module's only Redis commands, so its round trips) in INFO commandstats over the same requests (all clients of this Redis)."
	echo "CPU: of one core per process (other: everything else, e.g. the kernel's loopback TCP work or a concurrent test suite), and of all cores for the machine, during the measured run."
	echo "Machine CPU busy in the second before the cases: ${load_before}% (other work on the machine lowers every number)."
	echo "Caddy after the run: ${rss:-?} MB RSS, ${gor:-?} goroutines, $errors error log lines; mesibo fake: $(awk '/VmRSS/ {printf "%.0f", $2/1024}' "/proc/$FAKE_PID/status" 2>/dev/null || echo '?') MB RSS."
	if [ "$errors" != 0 ]; then
		echo "Commonest errors in caddy's log:"
		grep '"level":"error"' "$LOAD_WORK/caddy.log" | sed -n 's/.*"msg":"\([^"]*\)".*/\1/p' | sort | uniq -c | sort -rn | head -5
	fi
}

if [ "${BASH_SOURCE[0]}" = "$0" ]; then
	load_main "$@"
fi
