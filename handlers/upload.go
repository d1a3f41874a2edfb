package handlers

import (
	"context"
	"errors"

	"go.uber.org/zap"

	"github.com/caddy-messenger/messenger/ratelimit"
	"github.com/caddy-messenger/messenger/store"
)

// upload stores a file attached to a chat message (profile and gid 0 or absent), or a
// picture: the caller's profile picture (profile=1), a group's (profile=1 and gid > 0),
// or any picture (profile=0 and gid > 0); delete=1 removes the profile or group picture.
func (a *API) upload(ctx context.Context, c *call) *Response {
	req := c.req
	gid, code := req.GID()
	if code != "" {
		return fail("upload", c.now, code, "")
	}
	profile, remove := req.Int("profile") > 0, req.Int("delete") == 1
	if !profile && gid == 0 && !remove {
		return a.uploadAttachment(ctx, c)
	}
	var photo *string
	if remove {
		photo = new(string)
	} else {
		if req.File == nil {
			return fail("upload", c.now, CodeMissingFile, "No picture was sent.")
		}
		var resp *Response
		if photo, resp = a.savePicture(ctx, "upload", c); resp != nil {
			return resp
		}
	}

	answer := ok("upload", c.now)
	answer.Body["profile"] = "0"
	if profile {
		answer.Body["profile"] = "1"
	}
	answer.Body["file"] = ""
	if *photo != "" {
		answer.Body["file"] = a.Config.DownloadURL + *photo
	}
	if !profile {
		return answer
	}
	var record map[string]any
	if gid > 0 {
		g, resp := a.changeGroup("upload", ctx, c, gid, store.GroupChange{Photo: photo}, "")
		if resp != nil {
			a.discardPicture(photo)
			return resp
		}
		// members: the Android apps read the answer as a group record, members included
		// (the original sent none, and those apps crashed removing a group picture).
		record = map[string]any{"photo": g.Photo, "phone": "", "gid": itoa(g.GID), "name": g.Name, "status": "", "ts": g.TS,
			"members": g.Members}
	} else {
		u, due, err := a.Store.UpdateProfile(ctx, c.caller, store.ProfileChange{Photo: photo}, c.now, a.Config.ProfileInterval)
		if err != nil {
			a.discardPicture(photo)
			a.logError(ctx, "upload failed", zap.Error(err))
			return fail("upload", c.now, CodeDBError, "")
		}
		a.wakeForProfile(due)
		record = map[string]any{"photo": u.Photo, "phone": u.Phone, "gid": "0", "name": u.Name, "status": u.Status, "ts": u.TS}
	}
	for k, v := range record {
		answer.Body[k] = v
	}
	if tn := a.Media.Thumbnail(ctx, *photo); tn != "" {
		answer.Body["tn"] = tn
	}
	return answer
}

// uploadAttachment stores a file a person sends in a chat, of any type: never decoded,
// never thumbnailed, nobody notified; the app reads only file, the download URL, and
// passes it on through mesibo.
func (a *API) uploadAttachment(ctx context.Context, c *call) *Response {
	f := c.req.File
	if f == nil {
		return fail("upload", c.now, CodeMissingFile, "No file was sent.")
	}
	if resp := a.chargeUpload(ctx, "upload", c); resp != nil {
		return resp
	}
	name, err := a.Media.SaveAttachment(ctx, f.Content, f.Size, f.Name, c.now)
	if err != nil {
		a.logError(ctx, "saving an attachment failed", zap.Error(err))
		return tempFail("upload", c.now, "")
	}
	answer := ok("upload", c.now)
	answer.Body["profile"] = "0"
	answer.Body["file"] = a.Config.DownloadURL + name
	answer.Body["url"] = answer.Body["file"] // what the current Swift app reads
	return answer
}

// chargeUpload takes the request's file from the caller's upload budget, counted in
// KiB: every upload is charged, pictures too, once its size is known and before it is
// decoded or stored, so that neither the store nor the decoders can be flooded.
func (a *API) chargeUpload(ctx context.Context, op string, c *call) *Response {
	kib := int(max((c.req.File.Size+1023)/1024, 1))
	wait, err := a.Limiter.AllowN(ctx, kib, ratelimit.Check{
		Key: "upload:" + itoa(c.caller.UID), Rules: []ratelimit.Rule{a.Config.UploadBudget},
	})
	switch {
	case errors.Is(err, ratelimit.ErrOverBurst):
		return fail(op, c.now, CodeTooLarge, "The file is larger than the upload budget.")
	case err != nil:
		a.logError(ctx, "upload budget unavailable", zap.String("op", op), zap.Error(err))
		return tempFail(op, c.now, "")
	case wait > 0:
		return rateLimited(op, c.now, wait)
	}
	return nil
}
