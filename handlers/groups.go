package handlers

import (
	"context"
	"errors"
	"net/url"
	"strings"

	"go.uber.org/zap"

	"github.com/caddy-messenger/messenger/groups"
	"github.com/caddy-messenger/messenger/phone"
	"github.com/caddy-messenger/messenger/store"
)

// The group ops (PROTOCOL.md §3: setgroup, getgroup, editmembers, setadmin, delgroup).
// Authorisation, the member rules and the order of the local and the mesibo writes are the
// groups package's; here requests are read, phones normalised, and errors turned into the
// codes the apps know:
//
//   - gid missing (or members missing where required), or a member that is not a valid
//     phone number: MISSINGPARA (errmsg names the number);
//   - no such group, caller not an admin/owner where that is needed, or not a member for
//     delgroup: BADGROUP; getgroup by a non-member (or of a missing group): NOTMEMBER;
//   - mesibo refused the change: BADGROUP (or BADAPP when it refused the app token);
//     mesibo unreachable: BADAPP. Nothing was changed locally in either case;
//   - other changes of the group were ahead and the request's time (op_timeout) ran
//     out before its turn: TEMPFAIL. Nothing was changed.
//
// An admin asking to remove or demote the owner is not refused: the owner is skipped and
// the answer is OK with the members as they are (a no-op when the owner was the only one
// asked for).

// Notification subjects without a configurable text. %GROUP% is the group's name.
const (
	subjectGroupDeleted = "The group %GROUP% has been deleted"
	// Member removals, role changes and leaving update the apps silently.
	subjectSilent = ""
)

// setGroup creates a group (gid 0) or changes one the caller administers.
func (a *API) setGroup(ctx context.Context, c *call) *Response {
	req := c.req
	gid, code := req.GID()
	if code == "" && gid < 0 {
		code = CodeBadGroup
	}
	if _, nameCode := req.Text("name", maxTextBytes); code == "" {
		code = nameCode
	}
	if code != "" {
		return fail("setgroup", c.now, code, "")
	}
	name, rawMembers := req.Get("name"), req.List("m")
	if req.File != nil {
		// The apps URL-encode these when they send a picture with them (multipart).
		name = unescapeOnce(name)
		rawMembers = splitList(unescapeOnce(req.Get("m")))
	}
	members, resp := a.memberPhones("setgroup", c, rawMembers)
	if resp != nil {
		return resp
	}
	setup := groups.Setup{Name: name, Members: members, KeepMembers: gid > 0 && !req.Sent("m")}
	if req.Sent("type") {
		typ := req.Int("type")
		if typ < 0 || typ > 255 {
			return fail("setgroup", c.now, CodeMissingPara, "Invalid group type.")
		}
		t := int(typ)
		setup.Type = &t
	}
	photo, resp := a.savePicture(ctx, "setgroup", c)
	if resp != nil {
		return resp
	}
	setup.Photo = photo

	compose := a.groupNotification(ctx, c.caller.Phone, a.Config.Notifications.AddedToGroup)
	var g store.Group
	var err error
	if gid == 0 {
		g, err = a.Groups.Create(ctx, c.caller.Phone, setup, c.now, compose)
	} else {
		g, err = a.Groups.Change(ctx, gid, c.caller.Phone, setup, c.now, compose)
	}
	if resp := a.groupFailure(ctx, "setgroup", c, err); resp != nil {
		a.discardPicture(photo)
		return resp
	}
	a.wake()
	answer := a.groupAnswer("setgroup", c, g)
	answer.Body["name"] = g.Name
	answer.Body["photo"] = g.Photo
	answer.Body["ts"] = g.TS
	a.addThumbnail(ctx, answer, g)
	return answer
}

// getGroup answers a group the caller is a member of.
func (a *API) getGroup(ctx context.Context, c *call) *Response {
	gid, resp := groupID("getgroup", c)
	if resp != nil {
		return resp
	}
	g, err := a.Groups.Get(ctx, gid, c.caller.Phone)
	switch {
	case errors.Is(err, groups.ErrNoGroup), errors.Is(err, groups.ErrNotMember):
		// The same for both: a stranger learns nothing about which groups exist.
		return fail("getgroup", c.now, CodeNotMember, "")
	case err != nil:
		a.logError(ctx, "getgroup failed", zap.Error(err))
		return fail("getgroup", c.now, CodeDBError, "")
	}
	answer := a.groupAnswer("getgroup", c, g)
	answer.Body["name"] = g.Name
	answer.Body["status"] = ""
	answer.Body["photo"] = g.Photo
	answer.Body["ts"] = g.TS
	a.addThumbnail(ctx, answer, g)
	return answer
}

// editMembers adds members to a group the caller administers, or removes them (delete=1).
func (a *API) editMembers(ctx context.Context, c *call) *Response {
	req := c.req
	gid, phones, resp := a.groupAndMembers("editmembers", c)
	if resp != nil {
		return resp
	}
	remove := req.Int("delete") != 0
	subject := a.Config.Notifications.AddedToGroup
	if remove {
		subject = subjectSilent
	}
	g, err := a.Groups.EditMembers(ctx, gid, c.caller.Phone, phones, remove, c.now, a.groupNotification(ctx, c.caller.Phone, subject))
	if resp := a.groupFailure(ctx, "editmembers", c, err); resp != nil {
		return resp
	}
	a.wake()
	return a.groupAnswer("editmembers", c, g)
}

// setAdmin makes members admins (admin > 0) or plain members, in a group the caller
// administers; the owner stays the owner.
func (a *API) setAdmin(ctx context.Context, c *call) *Response {
	req := c.req
	gid, phones, resp := a.groupAndMembers("setadmin", c)
	if resp != nil {
		return resp
	}
	g, err := a.Groups.SetAdmin(ctx, gid, c.caller.Phone, phones, req.Int("admin") > 0, c.now, a.groupNotification(ctx, c.caller.Phone, subjectSilent))
	if resp := a.groupFailure(ctx, "setadmin", c, err); resp != nil {
		return resp
	}
	a.wake()
	return a.groupAnswer("setadmin", c, g)
}

// delGroup deletes a group (its owner) or leaves it (any other member).
func (a *API) delGroup(ctx context.Context, c *call) *Response {
	gid, resp := groupID("delgroup", c)
	if resp != nil {
		return resp
	}
	// The groups package decides between deleting and leaving. A deleted group is
	// notified as a group without members ("0:"); after a leave the remaining members
	// are told silently.
	deleted := a.groupNotification(ctx, c.caller.Phone, subjectGroupDeleted)
	left := a.groupNotification(ctx, c.caller.Phone, subjectSilent)
	compose := func(g store.Group) store.Notification {
		if len(g.Phones) == 0 {
			return deleted(g)
		}
		return left(g)
	}
	_, _, err := a.Groups.DeleteOrLeave(ctx, gid, c.caller.Phone, c.now, compose)
	if resp := a.groupFailure(ctx, "delgroup", c, err); resp != nil {
		return resp
	}
	a.wake()
	answer := ok("delgroup", c.now)
	answer.Body["gid"] = itoa(gid)
	return answer
}

// groupAnswer is an OK answer with the group's gid (a decimal string, PROTOCOL.md §2)
// and members string.
func (a *API) groupAnswer(op string, c *call, g store.Group) *Response {
	answer := ok(op, c.now)
	answer.Body["gid"] = itoa(g.GID)
	answer.Body["members"] = g.Members
	return answer
}

// groupID reads the gid of an op on an existing group: 0 or absent is MISSINGPARA.
func groupID(op string, c *call) (int64, *Response) {
	gid, code := c.req.GID()
	if code == "" && gid <= 0 {
		code = CodeMissingPara
	}
	if code != "" {
		return 0, fail(op, c.now, code, "")
	}
	return gid, nil
}

func (a *API) addThumbnail(ctx context.Context, r *Response, g store.Group) {
	if tn := a.Media.Thumbnail(ctx, g.Photo); tn != "" {
		r.Body["tn"] = tn
	}
}

// groupAndMembers reads the gid and m fields that editmembers and setadmin both need.
func (a *API) groupAndMembers(op string, c *call) (int64, []string, *Response) {
	gid, resp := groupID(op, c)
	if resp != nil {
		return 0, nil, resp
	}
	raw := c.req.List("m")
	if len(raw) == 0 {
		return 0, nil, fail(op, c.now, CodeMissingPara, "")
	}
	phones, resp := a.memberPhones(op, c, raw)
	return gid, phones, resp
}

// memberPhones normalises member phones like contact phones (numbers without a country
// code take the caller's), dropping duplicates. Unlike an address book, a member list
// with an invalid number is refused as a whole: silently leaving someone out of a group
// is worse than asking again. Unregistered numbers are fine.
func (a *API) memberPhones(op string, c *call, raw []string) ([]string, *Response) {
	seen := make(map[string]bool, len(raw))
	phones := make([]string, 0, len(raw))
	for _, r := range raw {
		if strings.Contains(r, "%") {
			r = unescapeOnce(r) // some app builds URL-encode the list
		}
		n, err := phone.ParseContact(r, c.caller.CC)
		if err != nil {
			return nil, fail(op, c.now, CodeMissingPara, "Not a valid phone number: "+shorten(r, 32))
		}
		if !seen[n.Digits] {
			seen[n.Digits] = true
			phones = append(phones, n.Digits)
		}
	}
	return phones, nil
}

// groupFailure maps an error of a group op to its answer; nil when err is nil.
func (a *API) groupFailure(ctx context.Context, op string, c *call, err error) *Response {
	var mesiboErr *groups.MesiboError
	switch {
	case err == nil:
		return nil
	case errors.Is(err, groups.ErrNoGroup), errors.Is(err, groups.ErrNotAdmin), errors.Is(err, groups.ErrNotMember):
		return fail(op, c.now, CodeBadGroup, "")
	case errors.Is(err, groups.ErrBadPhone):
		return fail(op, c.now, CodeMissingPara, "")
	case errors.Is(err, groups.ErrBusy):
		return tempFail(op, c.now, "The group is busy with other changes. Please try again.")
	case errors.As(err, &mesiboErr):
		if requestRefused(err) {
			a.Logger.Warn("mesibo refused the group change", zap.String("op", op), zap.Error(err))
			return fail(op, c.now, CodeBadGroup, "The messaging service refused the change.")
		}
		a.logError(ctx, "mesibo group call failed", zap.String("op", op), zap.Error(err))
		return fail(op, c.now, CodeBadApp, "The messaging service is unavailable. Please try again later.")
	}
	a.logError(ctx, op+" failed", zap.Error(err))
	return fail(op, c.now, CodeDBError, "")
}

// unescapeOnce URL-decodes s once; s stays as it is when it is not valid URL encoding.
func unescapeOnce(s string) string {
	if d, err := url.QueryUnescape(s); err == nil {
		return strings.TrimSpace(d)
	}
	return s
}

// splitList splits a comma-separated list, trimming items and dropping empty ones.
func splitList(s string) []string {
	var items []string
	for _, item := range strings.Split(s, ",") {
		if item = strings.TrimSpace(item); item != "" {
			items = append(items, item)
		}
	}
	return items
}

func shorten(s string, n int) string {
	if len(s) > n {
		return s[:n] + "..."
	}
	return s
}
