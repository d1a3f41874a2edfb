#!/usr/bin/env bash
# Builds a custom caddy with the messenger module (xcaddy) and runs it with
# Caddyfile.example, installing and starting MariaDB and Redis when missing and creating
# the database `messenger` with the user messenger/messenger. Extra arguments go to
# `caddy run`. Set MESIBO_APP_TOKEN to log in for real.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/services.sh

need_go
ensure_services
as_root_sql "
CREATE DATABASE IF NOT EXISTS messenger CHARACTER SET utf8mb4;
CREATE USER IF NOT EXISTS 'messenger'@'localhost' IDENTIFIED BY 'messenger';
CREATE USER IF NOT EXISTS 'messenger'@'127.0.0.1' IDENTIFIED BY 'messenger';
GRANT ALL PRIVILEGES ON messenger.* TO 'messenger'@'localhost';
GRANT ALL PRIVILEGES ON messenger.* TO 'messenger'@'127.0.0.1';"

go run github.com/caddyserver/xcaddy/cmd/xcaddy@v0.4.5 build v2.11.9 \
	--with github.com/caddy-messenger/messenger@v0.0.0=. --output ./caddy
mkdir -p "${MESSENGER_DATA:-./data}/files" "${MESSENGER_DATA:-./data}/thumbs"
exec ./caddy run --config Caddyfile.example --adapter caddyfile "$@"
