#!/usr/bin/env bash
# What the profile case's UPDATE costs MariaDB, ours against the original's, without an HTTP
# server in front (docs/performance.md): tools/loadgen -stmt on the caller's row of the
# database messenger_ref that scripts/ref-load.sh leaves behind, at 1 and 32 connections,
# 4 s each, printing executions a second, rows changed per execution and mariadbd's CPU per
# execution. It changes that row (name, status, ts) and nothing else.
#
#   ./scripts/ref-load.sh && ./scripts/stmt-costs.sh
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/services.sh
need_go

DB=messenger_ref CALLER=919600000001
DSN="root@unix(/run/mysqld/mysqld.sock)/$DB"
sql() { mariadb -N "$DB" -e "$1"; }
uid=$(sql "SELECT uid FROM users WHERE phone = $CALLER")
token=$(sql "SELECT token FROM tokens WHERE uid = $uid LIMIT 1")
[ -n "$uid" ] && [ -n "$token" ] || { echo "no caller in $DB: run scripts/ref-load.sh first" >&2; exit 1; }
now=$(date +%s) utc=$(date -u '+%F %T')
WORK=$(mktemp -d /tmp/stmt-costs.XXXXXX)
trap 'rm -rf "$WORK"' EXIT
go build -C tools -o "$WORK/loadgen" ./loadgen

# Ours: store.writeOwnProfile's statement on MariaDB (setProfile, keepPhone, validToken).
cat >"$WORK/ours.sql" <<'SQL'
UPDATE users AS u SET name = COALESCE(?, name), status = COALESCE(?, status), photo = COALESCE(?, photo),
ts = CASE WHEN COALESCE(ts, 0) < ? THEN ? ELSE COALESCE(ts, 0) + 1 END, phone = LAST_INSERT_ID(phone)
WHERE u.uid = (SELECT t.uid FROM tokens t WHERE t.token = ? AND (t.expirytime < '1970-01-02' OR t.expirytime > ?))
SQL
# The original's (api_functions.php: set name, status, ts = time() where uid), bound: with
# the same values and ts it changes nothing, as within a second of the reference load...
echo "UPDATE users SET name = ?, status = ?, ts = ? WHERE uid = ?" >"$WORK/original.sql"
# ...and with ts one more each time it writes, as with a status of its own per request.
echo "UPDATE users SET name = ?, status = ?, ts = ts + ? WHERE uid = ?" >"$WORK/original-writing.sql"

name="Load Tester" status="Busy benchmarking"
sql "UPDATE users SET name = '$name', status = '$status', ts = $now WHERE uid = $uid"
for conns in 1 32; do
	run() { echo "$1, $conns connections: $("$WORK/loadgen" -stmt "$WORK/$1.sql" -dsn "$DSN" -c "$conns" -d 4s \
		-watch "mariadbd=$(pidof mariadbd)" "${@:2}")"; }
	run ours "$name" "$status" "" "$now" "$now" "$token" "$utc"
	run original "$name" "$status" "$((now + 100000))" "$uid"
	run original-writing "$name" "$status" 1 "$uid"
done
