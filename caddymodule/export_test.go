package caddymodule

// CmdCopy lets the tests run `caddy messenger-copy` without a caddy binary.
var CmdCopy = cmdCopy
