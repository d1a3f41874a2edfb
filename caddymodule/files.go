package caddymodule

import (
	"errors"
	"net/http"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
	"github.com/caddyserver/caddy/v2/caddyconfig/httpcaddyfile"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	"go.uber.org/zap"

	"github.com/caddy-messenger/messenger/media"
)

func init() {
	caddy.RegisterModule(Files{})
	httpcaddyfile.RegisterHandlerDirective("messenger_files", parseFilesCaddyfile)
	httpcaddyfile.RegisterDirectiveOrder("messenger_files", httpcaddyfile.Before, "file_server")
}

// Files serves the files the messenger handler stores from the same storage, where
// file_server cannot reach them (an object store): GET and HEAD of /files/NAME and
// /thumbs/NAME, with ranges and conditional requests, 404 for anything else. Every
// answer carries X-Content-Type-Options: nosniff, a sandboxing Content-Security-Policy,
// and Content-Disposition: attachment unless the file is a picture, a video or audio,
// so that nothing a client uploaded can run as a page on this origin.
type Files struct {
	// Storage is the storage URL, the same as the messenger handler's. Placeholders.
	// Required.
	Storage string `json:"storage,omitempty"`

	server  media.FileServer
	poolKey []string
	logger  *zap.Logger
}

// CaddyModule returns the Caddy module information.
func (Files) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{
		ID:  "http.handlers.messenger_files",
		New: func() caddy.Module { return new(Files) },
	}
}

// Provision takes the pooled storage.
func (f *Files) Provision(ctx caddy.Context) error {
	f.logger = ctx.Logger()
	f.Storage = caddy.NewReplacer().ReplaceKnown(f.Storage, "")
	if f.Storage == "" {
		return errors.New("messenger_files: storage is required (a local folder is served by file_server)")
	}
	storage, _, err := takeStorage(ctx, &f.poolKey, f.Storage, "", "")
	if err != nil {
		return err
	}
	f.server = media.FileServer{Storage: storage, Logger: f.logger}
	return nil
}

// Cleanup releases the storage; the last config using it closes it.
func (f *Files) Cleanup() error {
	releasePools(&f.poolKey, f.logger)
	return nil
}

// ServeHTTP serves the file the request path names.
func (f *Files) ServeHTTP(w http.ResponseWriter, r *http.Request, _ caddyhttp.Handler) error {
	f.server.ServeHTTP(w, r)
	return nil
}

func parseFilesCaddyfile(h httpcaddyfile.Helper) (caddyhttp.MiddlewareHandler, error) {
	f := new(Files)
	err := f.UnmarshalCaddyfile(h.Dispenser)
	return f, err
}

// UnmarshalCaddyfile sets up the handler from Caddyfile tokens. Syntax:
//
//	messenger_files [<matcher>] [<storage>] {
//		storage <url>
//	}
func (f *Files) UnmarshalCaddyfile(d *caddyfile.Dispenser) error {
	d.Next() // directive name
	if d.NextArg() {
		f.Storage = d.Val()
	}
	if d.NextArg() {
		return d.ArgErr()
	}
	for d.NextBlock(0) {
		if d.Val() != "storage" {
			return d.Errf("unknown subdirective %q", d.Val())
		}
		if err := oneArg(d, &f.Storage); err != nil {
			return err
		}
	}
	if f.Storage == "" {
		return d.Err("messenger_files: storage is required")
	}
	return nil
}

// Interface guards
var (
	_ caddy.Provisioner           = (*Files)(nil)
	_ caddy.CleanerUpper          = (*Files)(nil)
	_ caddyhttp.MiddlewareHandler = (*Files)(nil)
	_ caddyfile.Unmarshaler       = (*Files)(nil)
)
