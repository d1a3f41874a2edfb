// Package messenger is the entry point for building a custom Caddy with the messenger
// API: `xcaddy build --with github.com/caddy-messenger/messenger@v0.0.0=.` imports this
// package, which registers the `messenger` handler and its code senders.
package messenger

import (
	_ "github.com/caddy-messenger/messenger/caddymodule"
)
