package handlers

import (
	"context"
	"errors"
	"time"

	"go.uber.org/zap"

	"github.com/caddy-messenger/messenger/media"
	"github.com/caddy-messenger/messenger/store"
)

// profile sets the caller's name and status, or a group's name when gid > 0; a picture
// may come with it. Only the fields sent change. A change of one's own name or status
// proves the token in the statement that writes it.
func (a *API) profile(ctx context.Context, c *call) *Response {
	req := c.req
	gid, gidCode := req.GID()
	name, nameCode := req.Text("name", maxTextBytes)
	status, statusCode := req.Text("status", maxTextBytes)
	if gidCode == "" && nameCode == "" && statusCode == "" && gid <= 0 && req.File == nil {
		due, err := a.Store.UpdateOwnProfile(ctx, c.token, store.ProfileChange{Name: name, Status: status}, c.now, a.Config.ProfileInterval)
		switch {
		case errors.Is(err, store.ErrNotFound):
			return refusal(c)
		case err != nil:
			a.logError(ctx, "profile failed", zap.String("op", "profile"), zap.Error(err))
			return fail("profile", c.now, CodeDBError, "")
		}
		a.wakeForProfile(due)
		return ok("profile", c.now)
	}
	if resp := a.authenticate(ctx, c); resp != nil {
		return resp
	}
	for _, code := range []string{gidCode, nameCode, statusCode} {
		if code != "" {
			return fail("profile", c.now, code, "")
		}
	}
	photo, resp := a.savePicture(ctx, "profile", c)
	if resp != nil {
		return resp
	}
	if gid > 0 {
		change := store.GroupChange{Name: name, Photo: photo}
		g, resp := a.changeGroup("profile", ctx, c, gid, change, c.caller.Name+" has changed the group name to %GROUP%")
		if resp != nil {
			a.discardPicture(photo)
			return resp
		}
		answer := ok("profile", c.now)
		answer.Body["gid"] = itoa(g.GID)
		return answer
	}
	change := store.ProfileChange{Name: name, Status: status, Photo: photo}
	_, due, err := a.Store.UpdateProfile(ctx, c.caller, change, c.now, a.Config.ProfileInterval)
	if err != nil {
		a.discardPicture(photo)
		a.logError(ctx, "profile failed", zap.Error(err))
		return fail("profile", c.now, CodeDBError, "")
	}
	a.wakeForProfile(due)
	return ok("profile", c.now)
}

// changeGroup applies change to a group the caller administers and notifies its members.
func (a *API) changeGroup(op string, ctx context.Context, c *call, gid int64, change store.GroupChange, subject string) (store.Group, *Response) {
	g, err := a.Groups.SetInfo(ctx, gid, c.caller.Phone, change, c.now, a.groupNotification(ctx, c.caller.Phone, subject))
	if resp := a.groupFailure(ctx, op, c, err); resp != nil {
		return g, resp
	}
	a.wake()
	return g, nil
}

// savePicture stores the request's file, if any, as a picture (charged to the caller's
// upload budget) and returns its stored name.
func (a *API) savePicture(ctx context.Context, op string, c *call) (*string, *Response) {
	f := c.req.File
	if f == nil {
		return nil, nil
	}
	if resp := a.chargeUpload(ctx, op, c); resp != nil {
		return nil, resp
	}
	name, err := a.Media.SavePicture(ctx, f.Content, f.Size, c.now)
	switch {
	case errors.Is(err, media.ErrTooLarge):
		return nil, fail(op, c.now, CodeTooLarge, "The picture is too large.")
	case errors.Is(err, media.ErrBadImage):
		return nil, fail(op, c.now, CodeBadImage, "The file is not a JPEG, PNG, GIF or WebP picture.")
	case errors.Is(err, media.ErrBusy):
		return nil, tempFail(op, c.now, "The server is busy. Please try again in a minute.")
	case err != nil:
		a.logError(ctx, "saving a picture failed", zap.String("op", op), zap.Error(err))
		return nil, tempFail(op, c.now, "")
	}
	return &name, nil
}

// discardTimeout bounds the removal of a picture stored for a request that then failed.
const discardTimeout = 10 * time.Second

// discardPicture removes a picture stored for a request that then failed. It does not
// use the request's context, which may be what ended.
func (a *API) discardPicture(name *string) {
	if name == nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), discardTimeout)
	defer cancel()
	if err := a.Media.Remove(ctx, *name); err != nil {
		a.Logger.Warn("removing an unused picture failed", zap.Error(err))
	}
}

// maxPushTokenBytes is what the push-token column holds. FCM and APNs tokens are far
// shorter.
const maxPushTokenBytes = 256

// setNotify stores the caller's push token.
func (a *API) setNotify(ctx context.Context, c *call) *Response {
	req := c.req
	token, code := req.Text("notifytoken", maxPushTokenBytes)
	if code != "" {
		return fail("setnotify", c.now, code, "")
	}
	if token == nil {
		token = new(string)
	}
	if err := a.Store.SetNotifyToken(ctx, c.caller.UID, *token, deviceType(req), req.Int("prod") > 0); err != nil {
		a.logError(ctx, "setnotify failed", zap.Error(err))
		return fail("setnotify", c.now, CodeDBError, "")
	}
	return ok("setnotify", c.now)
}
