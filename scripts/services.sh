# Sourced by run.sh and test.sh: installs MariaDB and Redis from Debian's packages when
# they are missing, starts them when they are not running, and runs SQL as the MariaDB
# root user (through the unix socket, which is how a fresh Debian lets root in).

SUDO=""
[ "$(id -u)" = 0 ] || SUDO="sudo"

need_go() {
	# The official tarball's place, for shells whose PATH lacks it.
	command -v go >/dev/null 2>&1 || [ ! -x /usr/local/go/bin/go ] || export PATH="$PATH:/usr/local/go/bin"
	if ! command -v go >/dev/null 2>&1; then
		echo "Go 1.26 or newer is needed (https://go.dev/dl/); Debian's golang package is too old." >&2
		exit 1
	fi
}

ensure_packages() {
	local missing=()
	command -v mariadbd >/dev/null 2>&1 || [ -x /usr/sbin/mariadbd ] || missing+=(mariadb-server)
	command -v mariadb >/dev/null 2>&1 || missing+=(mariadb-client)
	command -v redis-server >/dev/null 2>&1 || missing+=(redis-server)
	# go test -race needs cgo, so a C compiler.
	command -v gcc >/dev/null 2>&1 || missing+=(gcc libc6-dev)
	if [ ${#missing[@]} -gt 0 ]; then
		echo "Installing ${missing[*]} ..."
		$SUDO apt-get update -qq
		DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${missing[@]}" >/dev/null
	fi
}

mariadb_up() { mariadb-admin ping >/dev/null 2>&1 || mariadb-admin -h127.0.0.1 -uroot ping >/dev/null 2>&1; }

ensure_mariadb() {
	mariadb_up && return
	echo "Starting MariaDB ..."
	$SUDO service mariadb start >/dev/null 2>&1 ||
		$SUDO start-stop-daemon --start --oknodo --background --exec /usr/sbin/mariadbd -- --user=mysql
	for _ in $(seq 60); do mariadb_up && return; sleep 0.5; done
	echo "MariaDB did not start" >&2
	exit 1
}

ensure_redis() {
	redis-cli -h 127.0.0.1 ping >/dev/null 2>&1 && return
	echo "Starting Redis ..."
	$SUDO redis-server --daemonize yes --bind 127.0.0.1 --port 6379 --save "" --appendonly no >/dev/null
	for _ in $(seq 40); do redis-cli -h 127.0.0.1 ping >/dev/null 2>&1 && return; sleep 0.25; done
	echo "Redis did not start" >&2
	exit 1
}

ensure_services() {
	ensure_packages
	ensure_mariadb
	ensure_redis
}

# as_root_sql SQL: runs SQL as MariaDB's root, through the socket first.
as_root_sql() {
	$SUDO mariadb -uroot -e "$1" 2>/dev/null || mariadb -h127.0.0.1 -uroot -e "$1"
}

# ensure_database NAME: the database NAME, and the user messenger (password messenger) with
# every right on it.
ensure_database() {
	as_root_sql "
CREATE DATABASE IF NOT EXISTS $1 CHARACTER SET utf8mb4;
CREATE USER IF NOT EXISTS 'messenger'@'localhost' IDENTIFIED BY 'messenger';
CREATE USER IF NOT EXISTS 'messenger'@'127.0.0.1' IDENTIFIED BY 'messenger';
GRANT ALL PRIVILEGES ON $1.* TO 'messenger'@'localhost';
GRANT ALL PRIVILEGES ON $1.* TO 'messenger'@'127.0.0.1';"
}
