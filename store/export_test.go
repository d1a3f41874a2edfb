package store

import "time"

// HoldProfileAnnouncements starts a round of the announcements of the profile changes of
// the user with phone that lasts until release is called: a change of the user made
// meanwhile is written, and looked for a waiting update only after.
func (s *Store) HoldProfileAnnouncements(phone string) (release func()) {
	started, hold := make(chan struct{}), make(chan struct{})
	go s.profileAnnouncements.join(phone, func() (time.Time, error) {
		close(started)
		<-hold
		return time.Time{}, nil
	})
	<-started
	return func() { close(hold) }
}
