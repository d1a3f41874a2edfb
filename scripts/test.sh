#!/usr/bin/env bash
# Runs the whole test suite (with the race detector) twice: against a real MariaDB and
# Redis, installing and starting them when missing, and then against the embedded store
# (SQLite files, codes and limits in memory). Tests make their own databases, named
# messenger_test_*, as the user messenger_test, which this script creates.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/services.sh

need_go
ensure_services
as_root_sql "
CREATE USER IF NOT EXISTS 'messenger_test'@'localhost' IDENTIFIED BY 'messenger_test';
CREATE USER IF NOT EXISTS 'messenger_test'@'127.0.0.1' IDENTIFIED BY 'messenger_test';
GRANT ALL PRIVILEGES ON \`messenger\\_test\\_%\`.* TO 'messenger_test'@'localhost';
GRANT ALL PRIVILEGES ON \`messenger\\_test\\_%\`.* TO 'messenger_test'@'127.0.0.1';"
# Databases left behind by an interrupted run: those whose tables are all over two hours
# old (a run on this machine right now keeps its own).
for db in $(mariadb -h127.0.0.1 -umessenger_test -pmessenger_test -N -e "
	SELECT s.SCHEMA_NAME FROM information_schema.SCHEMATA s LEFT JOIN information_schema.TABLES t ON t.TABLE_SCHEMA = s.SCHEMA_NAME
	WHERE s.SCHEMA_NAME LIKE 'messenger\\_test\\_%' GROUP BY s.SCHEMA_NAME
	HAVING COALESCE(MAX(t.CREATE_TIME), NOW()) < NOW() - INTERVAL 2 HOUR"); do
	mariadb -h127.0.0.1 -umessenger_test -pmessenger_test -e "DROP DATABASE \`$db\`"
done

export MESSENGER_TEST_DSN="messenger_test:messenger_test@tcp(127.0.0.1:3306)/"
export MESSENGER_TEST_REDIS="redis://127.0.0.1:6379/0"
# The fuzz targets run their committed seed corpus as ordinary tests.
for backend in mysql embedded; do
	echo "== tests on the ${backend} store"
	MESSENGER_TEST_STORE=$backend go test -race -count=1 -timeout 20m "$@" ./...
done
