package handlers

import (
	"context"

	"go.uber.org/zap"

	"github.com/caddy-messenger/messenger/store"
)

// upload stores a picture: the caller's profile picture (profile=1), a group's (profile=1
// and gid > 0), or any picture (profile=0); delete=1 removes the profile or group picture.
func (a *API) upload(ctx context.Context, c *call) *Response {
	req := c.req
	gid, code := req.GID()
	if code != "" {
		return fail("upload", c.now, code, "")
	}
	profile, remove := req.Int("profile") > 0, req.Int("delete") == 1
	var photo *string
	if remove {
		photo = new(string)
	} else {
		if req.File == nil {
			return fail("upload", c.now, CodeMissingFile, "No picture was sent.")
		}
		var resp *Response
		if photo, resp = a.savePicture("upload", c); resp != nil {
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
		compose, wake := wakeAfter(a, a.profileNotification("", ""))
		u, err := a.Store.UpdateProfile(ctx, c.caller, store.ProfileChange{Photo: photo}, c.now, compose)
		if err != nil {
			a.discardPicture(photo)
			a.logError(ctx, "upload failed", zap.Error(err))
			return fail("upload", c.now, CodeDBError, "")
		}
		wake()
		record = map[string]any{"photo": u.Photo, "phone": u.Phone, "gid": "0", "name": u.Name, "status": u.Status, "ts": u.TS}
	}
	for k, v := range record {
		answer.Body[k] = v
	}
	if tn := a.Media.Thumbnail(*photo); tn != "" {
		answer.Body["tn"] = tn
	}
	return answer
}
