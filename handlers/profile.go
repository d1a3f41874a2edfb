package handlers

import (
	"context"
	"errors"

	"go.uber.org/zap"

	"github.com/caddy-messenger/messenger/media"
	"github.com/caddy-messenger/messenger/store"
)

// profile sets the caller's name and status, or a group's name when gid > 0; a picture
// may come with it. Only the fields sent change.
func (a *API) profile(ctx context.Context, c *call) *Response {
	req := c.req
	photo, resp := a.savePicture("profile", c)
	if resp != nil {
		return resp
	}
	if gid := req.Int("gid"); gid > 0 {
		change := store.GroupChange{Name: sentField(req, "name"), Photo: photo}
		g, resp := a.changeGroup("profile", ctx, c, gid, change, c.caller.Name+" has changed the group name to %GROUP%")
		if resp != nil {
			a.discardPicture(photo)
			return resp
		}
		answer := ok("profile", c.now)
		answer.Body["gid"] = g.GID
		return answer
	}
	compose, wake := wakeAfter(a, a.profileNotification("", ""))
	if _, err := a.Store.UpdateProfile(ctx, c.caller, ownProfileChange(req, photo), c.now, compose); err != nil {
		a.discardPicture(photo)
		a.logError(ctx, "profile failed", zap.Error(err))
		return fail("profile", c.now, "DBERROR", "")
	}
	wake()
	return ok("profile", c.now)
}

// profileNobodyWatches answers a change of the caller's own name or status in one
// statement, which proves the token and writes the change only if nobody has the caller
// among their contacts (nobody to notify; see store.UpdateUnwatchedProfile). nil: it did
// not write, and the request takes the usual way. A request with a picture always does:
// a picture is decoded only for a caller already known.
func (a *API) profileNobodyWatches(ctx context.Context, c *call, token string) *Response {
	if !profileOfCaller(c.req) || c.req.File != nil {
		return nil
	}
	written, err := a.Store.UpdateUnwatchedProfile(ctx, token, ownProfileChange(c.req, nil), c.now)
	if err != nil {
		a.logError(ctx, "profile failed", zap.String("op", "profile"), zap.Error(err))
		return fail("profile", c.now, "DBERROR", "")
	}
	if !written {
		return nil
	}
	return ok("profile", c.now)
}

// ownProfileChange is what a profile request without gid sets; photo is the stored
// picture, if one came.
func ownProfileChange(req *Request, photo *string) store.ProfileChange {
	return store.ProfileChange{Name: sentField(req, "name"), Status: sentField(req, "status"), Photo: photo}
}

// profileOfCaller: a profile request without gid changes the caller's own profile.
func profileOfCaller(req *Request) bool { return req.Int("gid") <= 0 }

// pictureOfCaller: a profile request that sets the caller's own picture (which
// profileNobodyWatches leaves to the usual way).
func pictureOfCaller(req *Request) bool { return profileOfCaller(req) && req.File != nil }

// sentField is a pointer to the field's value when it was sent (even empty), else nil.
func sentField(req *Request, name string) *string {
	if !req.Sent(name) {
		return nil
	}
	v := req.Get(name)
	return &v
}

// changeGroup applies change to a group the caller administers and notifies its members.
func (a *API) changeGroup(op string, ctx context.Context, c *call, gid int64, change store.GroupChange, subject string) (store.Group, *Response) {
	g, err := a.Store.UpdateGroupInfo(ctx, gid, c.caller.Phone, change, c.now, a.groupNotification(c.caller.Phone, subject))
	switch {
	case errors.Is(err, store.ErrNotFound), errors.Is(err, store.ErrNotAdmin):
		return g, fail(op, c.now, "BADGROUP", "")
	case err != nil:
		a.logError(ctx, op+" failed", zap.Error(err))
		return g, fail(op, c.now, "DBERROR", "")
	}
	a.wake()
	return g, nil
}

// savePicture stores the request's file, if any, and returns its stored name.
func (a *API) savePicture(op string, c *call) (*string, *Response) {
	if c.req.File == nil {
		return nil, nil
	}
	name, err := a.Media.SavePicture(c.req.File.Data, c.now)
	switch {
	case errors.Is(err, media.ErrTooLarge):
		return nil, fail(op, c.now, CodeTooLarge, "The picture is too large.")
	case errors.Is(err, media.ErrBadImage):
		return nil, fail(op, c.now, "BADIMAGE", "The file is not a JPEG, PNG, GIF or WebP picture.")
	case err != nil:
		a.Logger.Error("saving a picture failed", zap.Error(err))
		return nil, fail(op, c.now, "BADIMAGE", "")
	}
	return &name, nil
}

// discardPicture removes a picture stored for a request that then failed.
func (a *API) discardPicture(name *string) {
	if name == nil {
		return
	}
	if err := a.Media.Remove(*name); err != nil {
		a.Logger.Warn("removing an unused picture failed", zap.Error(err))
	}
}

// setNotify stores the caller's push token.
func (a *API) setNotify(ctx context.Context, c *call) *Response {
	req := c.req
	if err := a.Store.SetNotifyToken(ctx, c.caller.UID, req.Get("notifytoken"), deviceType(req), req.Int("prod") > 0); err != nil {
		a.logError(ctx, "setnotify failed", zap.Error(err))
		return fail("setnotify", c.now, "DBERROR", "")
	}
	return ok("setnotify", c.now)
}
