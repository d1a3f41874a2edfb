package main

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"time"
)

// The seeded data (PROTOCOL.md §6 tables). Phones 9197000xxxxx are valid Indian mobile
// numbers that the otp cases (9198...) never produce.
const (
	mainUID     = 1            // 1000 contacts, 50 registered
	mainPhone   = 919700000000 // its phone; contacts are mainPhone+1 .. mainPhone+1000
	nContacts   = 1000
	nRegistered = 50 // uids 2..51, phones mainPhone+1 .. mainPhone+50; each has the main
	//                  user and the 49 others as contacts, so each is watched by 50 users
	// uids loneUID .. loneUID+nLone-1, phones lonePhone ..: users nobody has as a contact
	// (the profile case). As many as that, so that 32 concurrent changes are nearly
	// always of different users, as in life. Their uids are far above those the mesibo
	// fake gives the users otp-verify registers (from 1001 on).
	loneUID   = 500_000
	nLone     = 10_000
	lonePhone = 919700020000
	groupGID  = 1  // owner mainPhone, members mainPhone+1 .. mainPhone+9
	groupSize = 10 // members, owner included
	// Everybody else: users registered a day or more ago whom the cases' users do not
	// know, so that users has a deployment's shape (its indexes as deep, a full sync's
	// look-ups as costly, a delta sync's range as narrow as in life).
	crowdUID   = 1_000_000
	nCrowd     = 100_000
	crowdPhone = 919600000000
)

// tokenOf is the seeded access token of uid: 64 characters, like mesibo's.
func tokenOf(uid int) string { return fmt.Sprintf("loadtoken%055d", uid) }

// contactPhones are the main user's contacts, as an address book holds them.
func contactPhones() []string {
	out := make([]string, nContacts)
	for i := range out {
		out[i] = "+" + strconv.Itoa(mainPhone+1+i)
	}
	return out
}

// seed writes the users, tokens, contacts and the group the cases use; running it again
// puts them back as they were.
func (e *env) seed(ctx context.Context) error {
	tx, err := e.db.BeginTx(ctx, nil)
	if err != nil {
		return err
	}
	defer tx.Rollback()
	now := time.Now().Unix()
	exec := func(q string, args ...any) {
		if err == nil {
			_, err = tx.ExecContext(ctx, q, args...)
		}
	}
	values := func(n int, row func(i int) string) string {
		parts := make([]string, n)
		for i := range parts {
			parts[i] = row(i)
		}
		return strings.Join(parts, ",")
	}

	// Users: the main one, the registered contacts, the lone ones.
	ours := fmt.Sprintf("uid = %d OR uid BETWEEN 2 AND %d OR uid BETWEEN %d AND %d", mainUID, 1+nRegistered, loneUID, loneUID+nLone-1)
	exec("DELETE FROM users WHERE " + ours)
	exec("DELETE FROM users WHERE phone BETWEEN ? AND ?", mainPhone, lonePhone+nLone)
	exec("INSERT INTO users (uid, phone, cc, name, status, ts) VALUES " +
		fmt.Sprintf("(%d, %d, 91, 'Load Main', 'main', %d),", mainUID, mainPhone, now-100_000) +
		values(nRegistered, func(i int) string {
			return fmt.Sprintf("(%d, %d, 91, 'User %d', 'hi there', %d)", 2+i, mainPhone+1+i, i, now-86_400+int64(i))
		}) + "," +
		values(nLone, func(i int) string {
			return fmt.Sprintf("(%d, %d, 91, 'Lone %d', 'alone', %d)", loneUID+i, lonePhone+i, i, now-100_000)
		}))
	// Tokens valid until 2037 (timestamp columns end in 2038).
	exec("DELETE FROM tokens WHERE " + ours)
	exec("INSERT INTO tokens (uid, token, expirytime) VALUES " + values(1+nRegistered+nLone, func(i int) string {
		uid := 1 + i // 1..51
		if i > nRegistered {
			uid = loneUID + i - nRegistered - 1
		}
		return fmt.Sprintf("(%d, '%s', '2037-12-31 00:00:00')", uid, tokenOf(uid))
	}))
	// Contacts: the main user's 1000; each registered user has the main user and the others.
	exec("DELETE FROM contacts WHERE " + ours)
	exec("INSERT INTO contacts (uid, phone) VALUES " + values(nContacts, func(i int) string {
		return fmt.Sprintf("(%d, %d)", mainUID, mainPhone+1+i)
	}))
	exec("INSERT INTO contacts (uid, phone) VALUES " + values(nRegistered*nRegistered, func(i int) string {
		uid, other := 2+i/nRegistered, i%nRegistered // other 0 = the main user, else registered
		if other == uid-1 {
			other = 0 // not oneself: the main user instead (inserted once more, ignored)
		}
		return fmt.Sprintf("(%d, %d)", uid, mainPhone+other)
	}) + " ON DUPLICATE KEY UPDATE subscribed = subscribed")
	// The group: the main user owns it, with nine of the registered contacts.
	exec("DELETE FROM `groups` WHERE gid = ?", groupGID)
	exec("DELETE FROM members WHERE gid = ?", groupGID)
	exec("INSERT INTO `groups` (gid, name, type, ts) VALUES (?, 'Load group', 0, ?)", groupGID, now-50_000)
	exec("INSERT INTO members (gid, phone, role) VALUES " + values(groupSize, func(i int) string {
		role := 0
		if i == 0 {
			role = 2
		}
		return fmt.Sprintf("(%d, %d, %d)", groupGID, mainPhone+i, role)
	}))
	exec("DELETE FROM users WHERE uid >= ?", crowdUID)
	for from := 0; from < nCrowd; from += 5000 {
		exec("INSERT INTO users (uid, phone, cc, name, status, ts) VALUES " + values(5000, func(i int) string {
			return fmt.Sprintf("(%d, %d, 91, 'Crowd %d', 'busy', %d)", crowdUID+from+i, crowdPhone+from+i, from+i, now-200_000-int64(from+i))
		}))
	}
	if err != nil {
		return err
	}
	return tx.Commit()
}
