// Package groups changes the messenger's groups (PROTOCOL.md §3: setgroup, getgroup,
// editmembers, setadmin, delgroup, and a group's name or picture through profile and
// upload). It owns who may do what, keeps the messaging service's (mesibo's) copy of
// each group in step with the store's, and undoes a change at mesibo when the local
// write fails. docs/groups.md tells the design: how changes of one group are
// serialised, the order of the writes, and what a lost instance costs.
package groups

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/caddy-messenger/messenger/mesiboclient"
	"github.com/caddy-messenger/messenger/phone"
	"github.com/caddy-messenger/messenger/store"
)

// Errors of a refused change. Nothing was changed, here or at mesibo.
var (
	// ErrNoGroup: no group of that gid.
	ErrNoGroup = errors.New("no such group")
	// ErrNotAdmin: the actor is neither an admin nor the owner of the group.
	ErrNotAdmin = errors.New("not a group admin")
	// ErrNotMember: the actor is not a member of the group.
	ErrNotMember = errors.New("not a group member")
	// ErrBadPhone: a member phone is not a phone number in international digits.
	ErrBadPhone = errors.New("not a phone number")
	// ErrBusy: other changes of the group were ahead, and the request's time ran out
	// before its turn.
	ErrBusy = errors.New("group busy with other changes")
)

// MesiboError is a failure of mesibo (refused or unreachable); nothing was changed
// locally, and mesibo's copy is as it was. Err is mesiboclient's error.
type MesiboError struct {
	Op  string // "groupadd", "groupset", "groupeditmembers" or "groupdel"
	Err error
}

func (e *MesiboError) Error() string { return "groups: mesibo " + e.Op + ": " + e.Err.Error() }

// Unwrap exposes mesiboclient's error.
func (e *MesiboError) Unwrap() error { return e.Err }

// changeTimeout bounds a change once it has its group's turn: from then on it runs to
// its end even if its request goes away, since stopping between mesibo's answer and the
// local write would leave the two copies apart. An undo has its own bound.
const changeTimeout = 30 * time.Second

// Notify composes the notification about a group as a change left it; the package
// addresses it (the members, and the members a change removed).
type Notify func(store.Group) store.Notification

// Groups changes groups in the store and at mesibo. It holds no state of its own: the
// store keeps the queue of each group's changes, so that all Groups of one store share it.
type Groups struct {
	store  *store.Store
	mesibo *mesiboclient.Client
}

// New returns the groups of s, mirrored at mesibo through m.
func New(s *store.Store, m *mesiboclient.Client) *Groups {
	return &Groups{store: s, mesibo: m}
}

// Setup is what setgroup asks for.
type Setup struct {
	// Name of the group; "" keeps the name of an existing group.
	Name string
	// Type is the app-defined group type (0-255); nil keeps it (0 for a new group).
	Type *int
	// Photo is the stored picture name; nil keeps it ("" for a new group).
	Photo *string
	// Members are member phones in international digits besides the actor; the actor
	// and the owner are always members. Members of an existing group not listed here
	// are removed.
	Members []string
	// KeepMembers leaves an existing group's members as they are (Members is ignored):
	// setgroup without m (PROTOCOL.md, "Group choices that stand").
	KeepMembers bool
}

// Get returns group gid for phone, who must be a member (ErrNotMember; a missing group
// is ErrNoGroup).
func (gs *Groups) Get(ctx context.Context, gid int64, phone string) (store.Group, error) {
	g, err := gs.store.Group(ctx, gid)
	switch {
	case errors.Is(err, store.ErrNotFound):
		return store.Group{}, ErrNoGroup
	case err != nil:
		return store.Group{}, err
	case g.Role(phone) == store.NotMember:
		return store.Group{}, ErrNotMember
	}
	return g, nil
}

// Create creates a group owned by creator with setup's members. Mesibo creates it first,
// since its id is the gid; then it is stored with notify's notification to the members.
// If storing fails, mesibo deletes it again.
func (gs *Groups) Create(ctx context.Context, creator string, setup Setup, now time.Time, notify Notify) (store.Group, error) {
	members, err := checkPhones(setup.Members)
	if err != nil {
		return store.Group{}, err
	}
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), changeTimeout)
	defer cancel()
	list := union([]string{creator}, members)
	gid, err := gs.mesibo.GroupAdd(ctx, mesiboclient.GroupRequest{Name: setup.Name, Members: list})
	if err != nil {
		return store.Group{}, &MesiboError{Op: "groupadd", Err: err}
	}
	ng := store.NewGroup{GID: gid, Name: setup.Name, Owner: creator, Members: list[1:]}
	if setup.Type != nil {
		ng.Type = *setup.Type
	}
	if setup.Photo != nil {
		ng.Photo = *setup.Photo
	}
	g, err := gs.store.InsertGroup(ctx, ng, now, addressed(notify, nil))
	if err != nil {
		return store.Group{}, gs.undo(ctx, err, func(ctx context.Context) error { return gs.deleteAtMesibo(ctx, gid) })
	}
	return g, nil
}

// Change is setgroup on existing group gid, by an admin or the owner. The members
// become the actor, setup's members and the owner (unless setup.KeepMembers): members
// not among them are removed, new ones join as plain members, the others keep their
// roles. The name (when not empty), type and photo (when set) are stored and ts bumped.
// Mesibo gets the name and the whole list (groupset) and, for the removed members,
// groupeditmembers with delete: its documentation does not say whether groupset with a
// shorter list removes anyone. notify's notification goes to the members and the removed.
func (gs *Groups) Change(ctx context.Context, gid int64, actor string, setup Setup, now time.Time, notify Notify) (store.Group, error) {
	members, err := checkPhones(setup.Members)
	if err != nil {
		return store.Group{}, err
	}
	return gs.change(ctx, gid, actor, func(ctx context.Context, lock *store.GroupLock, g store.Group) (store.Group, error) {
		list := g.Phones
		if !setup.KeepMembers {
			list = union(union([]string{actor}, members), owners(g))
		}
		added, removed := minus(list, g.Phones), minus(g.Phones, list)
		restore := func(ctx context.Context) error { return gs.setAtMesibo(ctx, gid, g.Name, g.Phones, added) }
		name := cmp.Or(setup.Name, g.Name)
		if err := gs.setAtMesibo(ctx, gid, name, list, nil); err != nil {
			return store.Group{}, err
		}
		if len(removed) > 0 {
			if err := gs.editAtMesibo(ctx, gid, removed, true); err != nil {
				return store.Group{}, gs.undo(ctx, err, restore)
			}
		}
		edit := store.GroupEdit{GroupChange: store.GroupChange{Type: setup.Type, Photo: setup.Photo}, Add: added, Remove: removed}
		if setup.Name != "" {
			edit.Name = &setup.Name
		}
		changed, err := lock.Edit(ctx, edit, now, addressed(notify, removed))
		if err != nil {
			return store.Group{}, gs.undo(ctx, err, restore)
		}
		return changed, nil
	})
}

// EditMembers adds phones to group gid as plain members, or removes them when remove
// is set, by an admin or the owner. The owner is never removed this way, and phones
// already in (add) or not in (remove) the group are skipped; when nothing is left to
// change, nothing happens and the group is returned as it is. Otherwise mesibo is told
// (groupeditmembers with the phones that change), ts is bumped and notify's
// notification goes to the members and the removed.
func (gs *Groups) EditMembers(ctx context.Context, gid int64, actor string, phones []string, remove bool, now time.Time,
	notify Notify) (store.Group, error) {
	changes := func(role int) bool {
		if remove {
			return role != store.NotMember && role != store.RoleOwner
		}
		return role == store.NotMember
	}
	return gs.changeMembers(ctx, gid, actor, phones, changes, func(ctx context.Context, lock *store.GroupLock, change []string) (store.Group, error) {
		if err := gs.editAtMesibo(ctx, gid, change, remove); err != nil {
			return store.Group{}, err
		}
		edit, removed := store.GroupEdit{Add: change}, []string(nil)
		if remove {
			edit, removed = store.GroupEdit{Remove: change}, change
		}
		changed, err := lock.Edit(ctx, edit, now, addressed(notify, removed))
		if err != nil {
			return store.Group{}, gs.undo(ctx, err, func(ctx context.Context) error { return gs.editAtMesibo(ctx, gid, change, !remove) })
		}
		return changed, nil
	})
}

// SetAdmin makes phones admins of group gid (admin set) or plain members, by an admin
// or the owner. The owner's role never changes, and phones not in the group are
// skipped; when nothing is left to change, nothing happens. Otherwise ts is bumped and
// notify's notification goes to the members. Mesibo keeps no roles and is not asked.
func (gs *Groups) SetAdmin(ctx context.Context, gid int64, actor string, phones []string, admin bool, now time.Time,
	notify Notify) (store.Group, error) {
	role := store.RoleMember
	if admin {
		role = store.RoleAdmin
	}
	changes := func(r int) bool { return r != store.NotMember && r != store.RoleOwner && r != role }
	return gs.changeMembers(ctx, gid, actor, phones, changes, func(ctx context.Context, lock *store.GroupLock, change []string) (store.Group, error) {
		return lock.Edit(ctx, store.GroupEdit{SetRole: change, Role: role}, now, addressed(notify, nil))
	})
}

// changeMembers runs apply with the phones whose role in group gid changes says would
// change, if actor is an admin or the owner; when there are none, nothing happens and
// the group is returned as it is.
func (gs *Groups) changeMembers(ctx context.Context, gid int64, actor string, phones []string, changes func(role int) bool,
	apply func(context.Context, *store.GroupLock, []string) (store.Group, error)) (store.Group, error) {
	phones, err := checkPhones(phones)
	if err != nil {
		return store.Group{}, err
	}
	return gs.change(ctx, gid, actor, func(ctx context.Context, lock *store.GroupLock, g store.Group) (store.Group, error) {
		var change []string
		for _, p := range phones {
			if changes(g.Role(p)) {
				change = append(change, p)
			}
		}
		if len(change) == 0 {
			return g, nil
		}
		return apply(ctx, lock, change)
	})
}

// SetInfo sets the name or picture of group gid (profile and upload with a gid), by an
// admin or the owner; ts is bumped and notify's notification goes to the members.
// Mesibo is not asked.
func (gs *Groups) SetInfo(ctx context.Context, gid int64, actor string, change store.GroupChange, now time.Time,
	notify Notify) (store.Group, error) {
	return gs.change(ctx, gid, actor, func(ctx context.Context, lock *store.GroupLock, _ store.Group) (store.Group, error) {
		return lock.Edit(ctx, store.GroupEdit{GroupChange: change}, now, addressed(notify, nil))
	})
}

// DeleteOrLeave is delgroup by a member of group gid (ErrNotMember otherwise). The
// owner deletes the group: mesibo first (groupdel; a group mesibo no longer has counts
// as deleted there), then the rows, with notify's notification about the group as it
// goes (no members, "0:") to its members; deleted is true and g is that last state.
// Anyone else leaves: mesibo removes them (groupeditmembers), their row goes, ts is
// bumped and notify's notification goes to the remaining members; g is the group after.
func (gs *Groups) DeleteOrLeave(ctx context.Context, gid int64, actor string, now time.Time, notify Notify) (g store.Group, deleted bool, err error) {
	var gone bool
	g, err = gs.locked(ctx, gid, func(ctx context.Context, lock *store.GroupLock, g store.Group) (store.Group, error) {
		switch g.Role(actor) {
		case store.NotMember:
			return store.Group{}, ErrNotMember
		case store.RoleOwner:
			gone = true
			return gs.delete(ctx, lock, g, now, notify)
		}
		leaver := []string{actor}
		if err := gs.editAtMesibo(ctx, gid, leaver, true); err != nil {
			return store.Group{}, err
		}
		changed, err := lock.Edit(ctx, store.GroupEdit{Remove: leaver}, now, addressed(notify, nil))
		if err != nil {
			return store.Group{}, gs.undo(ctx, err, func(ctx context.Context) error { return gs.editAtMesibo(ctx, gid, leaver, false) })
		}
		return changed, nil
	})
	return g, gone && err == nil, err
}

// delete deletes group g at mesibo, then here.
func (gs *Groups) delete(ctx context.Context, lock *store.GroupLock, g store.Group, now time.Time, notify Notify) (store.Group, error) {
	if err := gs.deleteAtMesibo(ctx, g.GID); err != nil {
		return store.Group{}, err
	}
	// A deleted group cannot be brought back at mesibo: nothing to undo with. Mesibo
	// no longer has the group, so the owner's next delgroup deletes the rows. The last
	// state has no members: the notification goes to those it had.
	last, err := lock.Delete(ctx, now, addressed(notify, g.Phones))
	if err != nil {
		return store.Group{}, fmt.Errorf("groups: group %d deleted at mesibo but not here: %w", g.GID, err)
	}
	return last, nil
}

// change runs do on group gid, locked, if actor is an admin or its owner.
func (gs *Groups) change(ctx context.Context, gid int64, actor string,
	do func(context.Context, *store.GroupLock, store.Group) (store.Group, error)) (store.Group, error) {
	return gs.locked(ctx, gid, func(ctx context.Context, lock *store.GroupLock, g store.Group) (store.Group, error) {
		if g.Role(actor) < store.RoleAdmin {
			return store.Group{}, ErrNotAdmin
		}
		return do(ctx, lock, g)
	})
}

// locked waits for group gid's turn (as long as ctx lets it), reads the group, and runs
// do with the group and a context of its own (changeTimeout).
func (gs *Groups) locked(ctx context.Context, gid int64,
	do func(context.Context, *store.GroupLock, store.Group) (store.Group, error)) (store.Group, error) {
	lock, err := gs.store.LockGroup(ctx, gid)
	if errors.Is(err, store.ErrGroupBusy) {
		return store.Group{}, ErrBusy
	}
	if err != nil {
		return store.Group{}, err
	}
	defer lock.Release()
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), changeTimeout)
	defer cancel()
	g, err := lock.Group(ctx)
	if errors.Is(err, store.ErrNotFound) {
		return store.Group{}, ErrNoGroup
	}
	if err != nil {
		return store.Group{}, err
	}
	return do(ctx, lock, g)
}

// undo puts mesibo back after a later step of a change failed with err, and returns
// err, saying whether the undo failed too. The undo has its own time: err may be that the
// change's ran out.
func (gs *Groups) undo(ctx context.Context, err error, undo func(context.Context) error) error {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), changeTimeout)
	defer cancel()
	if uerr := undo(ctx); uerr != nil {
		// Not wrapped: the caller must see what failed first, not the undo.
		return fmt.Errorf("%w (undoing the change at mesibo failed too, the copies differ: %v)", err, uerr)
	}
	return err
}

// setAtMesibo gives mesibo's group gid name and the member list, and removes the phones
// of drop, which groupset may have left in.
func (gs *Groups) setAtMesibo(ctx context.Context, gid int64, name string, list, drop []string) error {
	if err := gs.mesibo.GroupSet(ctx, mesiboclient.GroupRequest{GID: gid, Name: name, Members: list}); err != nil {
		return &MesiboError{Op: "groupset", Err: err}
	}
	if len(drop) == 0 {
		return nil
	}
	return gs.editAtMesibo(ctx, gid, drop, true)
}

// editAtMesibo adds phones to mesibo's group gid, or removes them.
func (gs *Groups) editAtMesibo(ctx context.Context, gid int64, phones []string, remove bool) error {
	if err := gs.mesibo.GroupEditMembers(ctx, gid, phones, remove); err != nil {
		return &MesiboError{Op: "groupeditmembers", Err: err}
	}
	return nil
}

// deleteAtMesibo deletes mesibo's group gid; a group mesibo does not have (BADGROUP)
// counts as deleted, so that a group mesibo lost can still be deleted here.
func (gs *Groups) deleteAtMesibo(ctx context.Context, gid int64) error {
	err := gs.mesibo.GroupDelete(ctx, gid)
	var refused *mesiboclient.RefusedError
	if err == nil || errors.As(err, &refused) && refused.Code == "BADGROUP" {
		return nil
	}
	return &MesiboError{Op: "groupdel", Err: err}
}

// addressed makes notify's notification go to the group's members and to the phones of
// also (members a change removed, so that their apps learn it).
func addressed(notify Notify, also []string) func(store.Group) store.Notification {
	if notify == nil {
		return nil
	}
	return func(g store.Group) store.Notification {
		n := notify(g)
		n.To = append(slices.Clone(g.Phones), also...)
		return n
	}
}

// checkPhones checks that every phone is in international digits and drops duplicates,
// keeping the first of each.
func checkPhones(phones []string) ([]string, error) {
	for _, p := range phones {
		if !phone.IsDigits(p) {
			return nil, fmt.Errorf("%w: %.32q", ErrBadPhone, p)
		}
	}
	return union(nil, phones), nil
}

// owners are the members of g with the owner's role; normally one.
func owners(g store.Group) []string {
	var out []string
	for _, p := range g.Phones {
		if g.Role(p) == store.RoleOwner {
			out = append(out, p)
		}
	}
	return out
}

// union is a followed by the phones of b, each once, in that order.
func union(a, b []string) []string {
	out := make([]string, 0, len(a)+len(b))
	seen := make(map[string]bool, len(a)+len(b))
	for _, p := range slices.Concat(a, b) {
		if !seen[p] {
			seen[p] = true
			out = append(out, p)
		}
	}
	return out
}

// minus is the phones of a that are not in b, in a's order.
func minus(a, b []string) []string {
	drop := make(map[string]bool, len(b))
	for _, p := range b {
		drop[p] = true
	}
	var out []string
	for _, p := range a {
		if !drop[p] {
			out = append(out, p)
		}
	}
	return out
}
