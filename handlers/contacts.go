package handlers

import (
	"context"
	"errors"

	"go.uber.org/zap"

	"github.com/caddy-messenger/messenger/phone"
	"github.com/caddy-messenger/messenger/ratelimit"
	"github.com/caddy-messenger/messenger/store"
)

// Caps per getcontacts answer, as the original had. An app that gets a full page asks
// again with the highest ts it saw (delta sync) to get the rest.
const (
	maxUsersPerSync  = 1000
	maxGroupsPerSync = 500
)

// getContacts stores the caller's address book and answers which of its numbers are
// registered; without phones it answers what changed since ts (PROTOCOL.md §3). The
// apps' periodic sync (no phones, no reset) proves the token in its own statement.
func (a *API) getContacts(ctx context.Context, c *call) *Response {
	req := c.req
	raw := req.List("phones")
	reset := req.Int("reset") == 1
	if len(raw) == 0 && !reset {
		return a.sync(ctx, c, false)
	}
	if resp := a.authenticate(ctx, c); resp != nil {
		return resp
	}
	if len(raw) > a.Config.Discovery.MaxPhones {
		return fail("getcontacts", c.now, CodeTooLarge, "Too many phone numbers in one request.")
	}
	if len(raw) == 0 { // a reset without phones
		if err := a.Store.SaveContacts(ctx, c.caller.UID, nil, true); err != nil {
			a.logError(ctx, "getcontacts failed", zap.Error(err))
			return fail("getcontacts", c.now, CodeDBError, "")
		}
		return a.sync(ctx, c, true)
	}

	phones := a.contactPhones(raw, c.caller.User)
	fresh, users, resp := a.chargeDiscovery(ctx, c, phones)
	if resp != nil {
		return resp
	}
	if reset {
		fresh, users = phones, nil // the list is emptied first: store them all again
	}
	var err error
	if len(fresh) > 0 || reset {
		err = a.Store.SaveContacts(ctx, c.caller.UID, fresh, reset)
	}
	if err == nil && len(fresh) > 0 {
		var freshUsers []store.User
		freshUsers, err = a.Store.UsersByPhones(ctx, fresh, c.caller.UID)
		users = append(users, freshUsers...)
	}
	if err != nil {
		a.logError(ctx, "getcontacts failed", zap.Error(err))
		return fail("getcontacts", c.now, CodeDBError, "")
	}
	return a.contactsAnswer(ctx, c, c.caller.User, store.FirstByTS(users, maxUsersPerSync), nil)
}

// sync answers what changed since the request's ts for the user of c's token; emptied:
// the list was just emptied, so it has no users, whatever a concurrent getcontacts added.
func (a *API) sync(ctx context.Context, c *call, emptied bool) *Response {
	caller, users, groups, err := a.Store.SyncSince(ctx, c.token, c.req.Int("ts"), maxUsersPerSync, maxGroupsPerSync)
	switch {
	case errors.Is(err, store.ErrNotFound):
		return refusal(c)
	case err != nil:
		a.logError(ctx, "getcontacts failed", zap.Error(err))
		return fail("getcontacts", c.now, CodeDBError, "")
	}
	if emptied {
		users = nil
	}
	return a.contactsAnswer(ctx, c, caller, users, groups)
}

// contactsAnswer is getcontacts' answer: the records of users and groups, and the
// caller's own profile as u. Their thumbnails are read at once, mostly from the cache.
func (a *API) contactsAnswer(ctx context.Context, c *call, caller store.User, users []store.User, groups []store.Group) *Response {
	photos := make([]string, 0, len(users)+len(groups))
	for _, u := range users {
		photos = append(photos, u.Photo)
	}
	for _, g := range groups {
		photos = append(photos, g.Photo)
	}
	tns := a.Media.Thumbnails(ctx, photos)
	records := make([]contactRecord, 0, len(users)+len(groups))
	for _, u := range users {
		records = append(records, contactRecord{Name: u.Name, Status: u.Status, Phone: u.Phone, Photo: u.Photo, GID: "0",
			TS: itoa(u.TS), TN: tns[u.Photo]})
	}
	for _, g := range groups {
		records = append(records, contactRecord{Name: g.Name, Photo: g.Photo, GID: itoa(g.GID), TS: itoa(g.TS),
			Members: &g.Members, TN: tns[g.Photo]})
	}
	resp := ok("getcontacts", c.now)
	resp.Body["contacts"] = records
	resp.Body["u"] = callerRecord{Name: caller.Name, Phone: caller.Phone, Status: caller.Status, Photo: caller.Photo, TS: itoa(caller.TS)}
	return resp
}

// contactRecord is a user or a group as getcontacts lists it; gid and ts are decimal
// strings, as the original sent them. members only for a group, tn (the base64
// thumbnail) only where there is one. The fields are in the order of their names, as the
// original's (and a map's) JSON has them.
type contactRecord struct {
	GID     string  `json:"gid"`
	Members *string `json:"members,omitempty"`
	Name    string  `json:"name"`
	Phone   string  `json:"phone"`
	Photo   string  `json:"photo"`
	Status  string  `json:"status"`
	TN      string  `json:"tn,omitempty"`
	TS      string  `json:"ts"`
}

// callerRecord is the caller's own profile in a getcontacts answer (u).
type callerRecord struct {
	Name   string `json:"name"`
	Phone  string `json:"phone"`
	Photo  string `json:"photo"`
	Status string `json:"status"`
	TS     string `json:"ts"`
}

// contactPhones normalises an address book: numbers without a country code take the
// caller's; invalid numbers, duplicates and the caller's own number are dropped.
func (a *API) contactPhones(raw []string, caller store.User) []string {
	seen := make(map[string]bool, len(raw))
	phones := make([]string, 0, len(raw))
	for _, r := range raw {
		n, err := phone.ParseContact(r, caller.CC)
		if err != nil || seen[n.Digits] || n.Digits == caller.Phone {
			continue
		}
		seen[n.Digits] = true
		phones = append(phones, n.Digits)
	}
	return phones
}

// chargeDiscovery takes one from the caller's discovery budget per number not already in
// the caller's contact list, and returns those numbers, and the registered users among
// the others.
func (a *API) chargeDiscovery(ctx context.Context, c *call, phones []string) ([]string, []store.User, *Response) {
	known, knownUsers, err := a.Store.KnownContacts(ctx, c.caller.UID, phones)
	if err != nil {
		a.logError(ctx, "getcontacts failed", zap.Error(err))
		return nil, nil, fail("getcontacts", c.now, CodeDBError, "")
	}
	var fresh []string
	for _, p := range phones {
		if !known[p] {
			fresh = append(fresh, p)
		}
	}
	if len(fresh) == 0 {
		return nil, knownUsers, nil
	}
	wait, err := a.Limiter.AllowN(ctx, len(fresh), ratelimit.Check{
		Key: "discovery:" + itoa(c.caller.UID), Rules: []ratelimit.Rule{a.Config.Discovery.Budget},
	})
	if err != nil && !errors.Is(err, ratelimit.ErrOverBurst) && a.Config.Discovery.FailOpen {
		a.Logger.Warn("discovery budget unavailable; allowing the look-up (fail_open)", zap.Error(err))
		return fresh, knownUsers, nil
	}
	switch {
	case errors.Is(err, ratelimit.ErrOverBurst):
		return nil, nil, fail("getcontacts", c.now, CodeTooLarge, "Too many new phone numbers in one request.")
	case err != nil:
		a.logError(ctx, "discovery budget unavailable", zap.Error(err))
		return nil, nil, tempFail("getcontacts", c.now, "")
	case wait > 0:
		return nil, nil, rateLimited("getcontacts", c.now, wait)
	}
	return fresh, knownUsers, nil
}

// delContacts removes numbers from the caller's contact list.
func (a *API) delContacts(ctx context.Context, c *call) *Response {
	raw := c.req.List("phones")
	if len(raw) == 0 {
		return fail("delcontacts", c.now, CodeMissingPara, "")
	}
	if err := a.Store.DeleteContacts(ctx, c.caller.UID, a.contactPhones(raw, c.caller.User)); err != nil {
		a.logError(ctx, "delcontacts failed", zap.Error(err))
		return fail("delcontacts", c.now, CodeDBError, "")
	}
	return ok("delcontacts", c.now)
}
