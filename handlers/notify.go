package handlers

import (
	"context"
	"encoding/json"
	"strings"
	"time"

	"github.com/caddy-messenger/messenger/store"
)

// Notifications are the texts of the notifications the ops send (PROTOCOL.md §4).
// %NAME% is replaced by the apps with the user's name.
type Notifications struct {
	// NewUser is the subject sent to a new user's contacts.
	NewUser string `json:"new_user,omitempty"`
	// NewUserMessage is its body text.
	NewUserMessage string `json:"new_user_message,omitempty"`
	// AddedToGroup is sent to members when a group is created or changed; %GROUP% is
	// replaced by the group's name.
	AddedToGroup string `json:"added_to_group,omitempty"`
}

// notificationBody is the JSON the apps parse from a notification message.
type notificationBody struct {
	Subject string `json:"subject"`
	Msg     string `json:"msg"`
	Type    int    `json:"type"`
	Action  int    `json:"action"`
	Name    string `json:"name"`
	GID     int64  `json:"gid"`
	Phone   string `json:"phone"`
	Status  string `json:"status"`
	Members string `json:"members,omitempty"`
	Photo   string `json:"photo"`
	TS      int64  `json:"ts"`
	TN      string `json:"tn,omitempty"`
}

func (b notificationBody) bytes() []byte {
	data, _ := json.Marshal(b) // only strings and numbers: cannot fail
	return data
}

// profileNotification tells a user's contacts about the user's new profile. Without a
// subject or text it is a silent update of the contact, which a newer one replaces.
func (a *API) profileNotification(ctx context.Context, subject, msg string) func(store.User) store.Notification {
	return func(u store.User) store.Notification {
		return store.Notification{From: u.Phone, Queue: store.UserQueue(u.Phone), Replaceable: subject == "" && msg == "", Body: notificationBody{
			Subject: subject, Msg: msg, Name: u.Name, Phone: u.Phone, Status: u.Status,
			Photo: u.Photo, TS: u.TS, TN: a.Media.Thumbnail(ctx, u.Photo),
		}.bytes()}
	}
}

// ProfileUpdate is the body of a silent update of u's profile to u's contacts, as the
// outbox composes it when it sends a profile update (store.ToContactsOfSender).
func (a *API) ProfileUpdate(ctx context.Context, u store.User) []byte {
	return a.profileNotification(ctx, "", "")(u).Body
}

// groupNotification tells a group's members about its new state, from the acting phone.
func (a *API) groupNotification(ctx context.Context, from, subject string) func(store.Group) store.Notification {
	return func(g store.Group) store.Notification {
		return store.Notification{From: from, To: g.Phones, Queue: "group:" + itoa(g.GID), Body: notificationBody{
			Subject: strings.ReplaceAll(subject, "%GROUP%", g.Name), Name: g.Name, GID: g.GID,
			Members: g.Members, Photo: g.Photo, TS: g.TS, TN: a.Media.Thumbnail(ctx, g.Photo),
		}.bytes()}
	}
}

// wake tells the outbox worker that a notification was queued, due now.
func (a *API) wake() {
	if a.Outbox != nil {
		a.Outbox(time.Time{})
	}
}

// wakeForProfile tells the outbox worker about the profile update a change queued, due
// at due; zero: it queued none.
func (a *API) wakeForProfile(due time.Time) {
	if !due.IsZero() && a.Outbox != nil {
		a.Outbox(due)
	}
}

// wakeAfter wraps compose so that the worker is woken only when the store actually queued
// a notification (it calls compose only then): call the returned func after the commit.
func wakeAfter[T any](a *API, compose func(T) store.Notification) (func(T) store.Notification, func()) {
	queued := false
	return func(v T) store.Notification { queued = true; return compose(v) }, func() {
		if queued {
			a.wake()
		}
	}
}
