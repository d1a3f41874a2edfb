#!/usr/bin/env bash
# The reference load of issue 17 against this server and against the PHP original, back to
# back, with ratios: php-ref/load/run.sh (four cases, wrk; php-ref is the team's harness beside
# the checkout, not in this repository: docs/performance.md) against each.
#
#   ./scripts/ref-load.sh                          # both servers, fake mesibo at 0 latency
#   FAKE_FLAGS="-latency 100ms" ./scripts/ref-load.sh
#
# Ours: the caddy in CADDY (built with xcaddy when missing; delete it after a code change),
# a fresh database messenger_ref (MariaDB's unix socket), Redis under a prefix, its own
# fake mesibo (internal/cmd/fakemesibo), test numbers 919600000001 and 919700000000…19
# with code 123456, OTP limits out of the way of 21 logins from one IP. PHP: php-ref/run.sh
# and stop.sh. During each case it samples our caddy's RSS (the case's peak) and counts our
# database user's statements (USER_STATISTICS: requests and outbox deliveries together).
#
# Environment: CADDY [/tmp/perf-caddy]  PHPREF [../shared/php-ref beside the checkout]
#   BASE_PORT [16080] (uses BASE_PORT..+11)  FAKE_FLAGS []  SIDES ["ours php"]
#   PPROF_DIR []: save a CPU profile of our caddy (8 s) in each case there
#   HALF_RATE [0]: 1 also runs the small cases (full sync, getgroup, profile) against ours
#     at half the rate wrk reached, open loop (tools/loadgen -rate), for their p99
#   KEEP_WORK [0]: keep the work folder in /tmp
#   OURS_OPTIONS []: more lines for our messenger block (e.g. "max_db_connections 8")
#   PROFILE_DISTINCT [0]: 1 gives every request of the profile case a status of its own
#     (scripts/ref-load-distinct.lua around php-ref's wrk script), so that each one changes
#     the profile on both servers
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/services.sh
need_go

CADDY=${CADDY:-/tmp/perf-caddy}
PHPREF=${PHPREF:-$(cd .. && pwd)/shared/php-ref}
[ -x "$PHPREF/load/run.sh" ] || PHPREF=/work/shared/php-ref
BASE=${BASE_PORT:-16080}
SIDES=${SIDES:-ours php}
PORT=$BASE ADMIN=$((BASE + 1)) FAKE=$((BASE + 2)) PHP_PORT=$((BASE + 10)) PHP_FAKE=$((BASE + 11))
DB=messenger_ref DBUSER=messenger_ref
CALLER=919600000001
PIDS=()

log() { printf '%s [ref-load] %s\n' "$(date +%T)" "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

WORK=$(mktemp -d /tmp/ref-load-work.XXXXXX)
# Per-user statement counts need MariaDB's userstat; it is put back as it was on exit.
USERSTAT=$(mariadb -N -e "SELECT @@GLOBAL.userstat" 2>/dev/null || echo "")
cleanup() {
	local pid
	for pid in "${PIDS[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
	for pid in "${PIDS[@]}"; do timeout 15 tail --pid="$pid" -f /dev/null 2>/dev/null || kill -KILL "$pid" 2>/dev/null || true; done
	[ "${PHP_UP:-0}" = 1 ] && "$PHPREF/stop.sh" >/dev/null 2>&1
	[ "$USERSTAT" != 0 ] || as_root_sql "SET GLOBAL userstat = 0" || true
	[ "${KEEP_WORK:-0}" = 1 ] && log "work folder kept: $WORK" || rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# LOAD: the folder of the load's run.sh, which runs wrk with the post.lua beside it.
LOAD=$PHPREF/load
if [ "${PROFILE_DISTINCT:-0}" = 1 ]; then
	LOAD=$WORK/load
	mkdir -p "$LOAD"
	cp "$PHPREF/load/run.sh" "$LOAD/run.sh"
	cp scripts/ref-load-distinct.lua "$LOAD/post.lua"
fi

command -v wrk >/dev/null || $SUDO apt-get install -y -qq wrk jq >/dev/null || die "installing wrk failed"
command -v jq >/dev/null || $SUDO apt-get install -y -qq jq >/dev/null || die "installing jq failed"
if [ ! -x "$CADDY" ]; then
	log "building $CADDY with xcaddy (minutes) ..."
	go run github.com/caddyserver/xcaddy/cmd/xcaddy@v0.4.5 build v2.11.9 \
		--with github.com/caddy-messenger/messenger@v0.0.0=. --output "$CADDY" >"$WORK/build.log" 2>&1 ||
		{ tail -20 "$WORK/build.log" >&2; die "xcaddy build failed"; }
fi
go build -o "$WORK/fakemesibo" ./internal/cmd/fakemesibo

# fake_latency: the -latency of FAKE_FLAGS, for our fake (it takes no other flag).
fake_latency() { sed -n 's/.*-latency[ =]\([^ ]*\).*/\1/p' <<<"${FAKE_FLAGS:-}" | grep . || echo 0s; }

statements() {
	mariadb -N -e "SELECT COALESCE(SUM(SELECT_COMMANDS + UPDATE_COMMANDS + OTHER_COMMANDS), 0)
		FROM information_schema.USER_STATISTICS WHERE USER = '$DBUSER'" 2>/dev/null || echo 0
}

# measure NAME URL TOKEN PID: runs the reference load; while wrk runs, samples PID's RSS
# and (for ours) the statements; writes NAME.txt (wrk lines) and NAME.extra (per case:
# peak RSS MB, statements).
measure() {
	local name=$1 url=$2 token=$3 pid=$4 out="$WORK/$1.txt" runner case=0 in=0 rss peak=0 s0=0 prof=()
	: >"$out"
	: >"$WORK/$name.extra"
	CALLER_PHONE=$CALLER OUT="$out" REF_POST_LUA="$PHPREF/load/post.lua" "$LOAD/run.sh" "$url" "$token" >/dev/null 2>"$WORK/$name.load.log" &
	runner=$!
	while kill -0 "$runner" 2>/dev/null; do
		if pgrep -x wrk -s "$(ps -o sid= -p "$runner" | tr -d ' ')" >/dev/null 2>&1; then
			if [ "$in" = 0 ]; then
				in=1 peak=0 s0=$(statements)
				if [ -n "${PPROF_DIR:-}" ] && [ "$name" = ours ]; then
					mkdir -p "$PPROF_DIR"
					curl -s -m 20 -o "$PPROF_DIR/cpu-$case.pprof" "http://127.0.0.1:$ADMIN/debug/pprof/profile?seconds=8" &
				fi
			fi
			rss=$(awk '/VmRSS/ {printf "%d", $2/1024}' "/proc/$pid/status" 2>/dev/null || echo 0)
			[ "${rss:-0}" -gt "$peak" ] && peak=$rss
		elif [ "$in" = 1 ]; then
			in=0
			echo "$peak $(($(statements) - s0))" >>"$WORK/$name.extra"
			case=$((case + 1))
		fi
		sleep 0.2
	done
	[ "$in" = 0 ] || echo "$peak $(($(statements) - s0))" >>"$WORK/$name.extra"
	wait "$runner" || { cat "$WORK/$name.load.log" >&2; die "the reference load against $name failed"; }
}

run_ours() {
	as_root_sql "DROP DATABASE IF EXISTS $DB; CREATE DATABASE $DB CHARACTER SET utf8mb4;
CREATE USER IF NOT EXISTS '$DBUSER'@'localhost' IDENTIFIED BY '$DBUSER';
GRANT ALL PRIVILEGES ON $DB.* TO '$DBUSER'@'localhost'; SET GLOBAL userstat = 1;" || die "creating $DB failed"
	redis-cli -h 127.0.0.1 --scan --pattern '*ref17:*' | xargs -r redis-cli -h 127.0.0.1 DEL >/dev/null
	mkdir -p "$WORK/files" "$WORK/thumbs" "$WORK/xdg"
	"$WORK/fakemesibo" -addr "127.0.0.1:$FAKE" -token ref-token -max 1h -latency "$(fake_latency)" >"$WORK/fake.log" 2>&1 &
	PIDS+=($!)
	local tests="" i
	for i in $(seq 50); do (exec 3<>"/dev/tcp/127.0.0.1/$FAKE") 2>/dev/null && break; sleep 0.1; done
	for i in $(seq 0 19); do tests+="		test_number $((919700000000 + i)) 123456"$'\n'; done
	cat >"$WORK/Caddyfile" <<EOF
{
	admin 127.0.0.1:$ADMIN
	auto_https off
	persist_config off
	storage file_system $WORK/storage
}
http://127.0.0.1:$PORT {
	bind 127.0.0.1
	@api path / /api.php
	messenger @api {
		database $DBUSER:$DBUSER@unix(/run/mysqld/mysqld.sock)/$DB
		redis redis://127.0.0.1:6379/0
		redis_key_prefix ref17:
		mesibo {
			endpoint http://127.0.0.1:$FAKE/backend/
			app_token ref-token
		}
		otp {
			secret ref-load-otp-secret
			sender log
			test_number $CALLER 123456
$tests		}
		rate_limit otp_phone 1000 1m
		rate_limit otp_ip 1000 1m
		files_dir $WORK/files
		thumbs_dir $WORK/thumbs
		download_url http://127.0.0.1:$PORT/files/
		${OURS_OPTIONS:-}
	}
}
EOF
	XDG_CONFIG_HOME="$WORK/xdg" XDG_DATA_HOME="$WORK/xdg" "$CADDY" run --config "$WORK/Caddyfile" --adapter caddyfile >"$WORK/caddy.log" 2>&1 &
	local cpid=$!
	PIDS+=($cpid)
	for i in $(seq 100); do curl -s -m 1 "http://127.0.0.1:$PORT/api.php" | grep -q NOOP && break; sleep 0.3; done
	curl -s -m 1 "http://127.0.0.1:$PORT/api.php" | grep -q NOOP || { tail "$WORK/caddy.log" >&2; die "our caddy did not start"; }
	local url="http://127.0.0.1:$PORT/api.php" t
	curl -s "$url" -d "op=login&phone=$CALLER&appid=com.mesibo.messenger" >/dev/null
	t=$(curl -s "$url" -d "op=login&phone=$CALLER&appid=com.mesibo.messenger&code=123456" | jq -r .token)
	[ -n "$t" ] && [ "$t" != null ] || die "our login failed"
	log "ours: measuring (caddy pid $cpid, load average $(cut -d' ' -f1-3 /proc/loadavg))"
	measure ours "$url" "$t" "$cpid"
	[ "${HALF_RATE:-0}" = 1 ] && half_rate "$url" "$t"
	log "ours: $(grep -c '"level":"error"' "$WORK/caddy.log" || true) error lines in caddy's log"
	for i in "${PIDS[@]}"; do kill -TERM "$i" 2>/dev/null || true; done
	for i in "${PIDS[@]}"; do timeout 15 tail --pid="$i" -f /dev/null || true; done
	PIDS=()
}

# half_rate URL TOKEN: the small cases' requests, as run.sh makes them, at half the rate
# wrk reached with each, open loop; appends loadgen's lines to half.txt.
half_rate() {
	local url=$1 token=$2 c rate gid
	(cd tools && go build -o "$WORK/loadgen" ./loadgen) || die "building tools/loadgen failed"
	gid=$(mariadb -N -e "SELECT MAX(gid) FROM $DB.\`groups\`")
	printf 'op=getcontacts&token=%s&ts=0' "$token" >"$WORK/half-getcontacts-0.txt"
	printf 'op=getgroup&token=%s&gid=%s' "$token" "$gid" >"$WORK/half-getgroup.txt"
	printf 'op=profile&token=%s&name=Load%%20Tester&status=Busy%%20benchmarking' "$token" >"$WORK/half-profile.txt"
	for c in getcontacts-0 getgroup profile; do
		rate=$(awk -v r="$(rate "$c" ours)" 'BEGIN { printf "%d", r / 2 }')
		sleep 3
		echo "$c at $rate/s: $("$WORK/loadgen" -url "$url" -case body -body "$WORK/half-$c.txt" -rate "$rate" -d 10s -c 64)" >>"$WORK/half.txt"
	done
}

run_php() {
	[ -x "$WORK/php-caddy" ] || cp "$CADDY" "$WORK/php-caddy"
	CADDY="$WORK/php-caddy" "$PHPREF/run.sh" "$PHP_PORT" "$PHP_FAKE" >"$WORK/php-run.log" 2>&1 ||
		{ cat "$WORK/php-run.log" >&2; die "php-ref/run.sh failed"; }
	PHP_UP=1
	local url="http://127.0.0.1:$PHP_PORT/api.php" t
	t=$(curl -s "$url" -d "op=login&phone=$CALLER&appid=com.mesibo.messenger&code=123456" | jq -r .token)
	[ -n "$t" ] && [ "$t" != null ] || die "PHP login failed"
	log "php: measuring (load average $(cut -d' ' -f1-3 /proc/loadavg))"
	measure php "$url" "$t" "$(cat /tmp/php-ref-run/caddy.pid)"
	"$PHPREF/stop.sh" >/dev/null 2>&1
	PHP_UP=0
}

rate() { sed -n "s/^$1 *req\/s= *\([0-9.]*\).*/\1/p" "$WORK/$2.txt" 2>/dev/null; }
log "machine: $(nproc) CPUs, load average $(cut -d' ' -f1-3 /proc/loadavg); FAKE_FLAGS='${FAKE_FLAGS:-}' PROFILE_DISTINCT=${PROFILE_DISTINCT:-0} OURS_OPTIONS='${OURS_OPTIONS:-}'"
for side in $SIDES; do "run_$side"; sleep 3; done

p99() { sed -n "s/^$1 .*p99= *\([0-9.]*\)ms.*/\1/p" "$WORK/$2.txt" 2>/dev/null; }
reqs() { sed -n "s/^$1 .*requests=\([0-9]*\).*/\1/p" "$WORK/$2.txt" 2>/dev/null; }
echo
echo "$(date -u '+%F %H:%M') UTC, $(nproc) CPUs, load average at the end $(cut -d' ' -f1-3 /proc/loadavg), FAKE_FLAGS='${FAKE_FLAGS:-}' PROFILE_DISTINCT=${PROFILE_DISTINCT:-0} OURS_OPTIONS='${OURS_OPTIONS:-}'"
for side in $SIDES; do echo "--- $side"; cat "$WORK/$side.txt"; done
[ -s "$WORK/half.txt" ] && { echo "--- ours at half rate, open loop"; cat "$WORK/half.txt"; }
echo
echo "| case | PHP req/s | ours req/s | ratio | target | p99 ms PHP / ours | our caddy RSS peak MB | our SQL statements / request |"
echo "|---|---:|---:|---:|---:|---:|---:|---:|"
n=0
for c in getcontacts-0 getcontacts-1000 getgroup profile; do
	n=$((n + 1))
	target=5; [ "$c" = getcontacts-1000 ] && target=10
	read -r rss st < <(sed -n "${n}p" "$WORK/ours.extra" 2>/dev/null; echo "- -")
	per=$(awk -v s="${st:-}" -v r="$(reqs "$c" ours)" 'BEGIN { if (r > 0 && s != "-") printf "%.1f", s / r; else print "-" }')
	ratio=$(awk -v a="$(rate "$c" php)" -v b="$(rate "$c" ours)" 'BEGIN { if (a > 0) printf "%.1f×", b / a; else print "-" }')
	echo "| $c | $(rate "$c" php) | $(rate "$c" ours) | $ratio | ≥ $target× | $(p99 "$c" php) / $(p99 "$c" ours) | $rss | $per |"
done
