package store

// HoldProfileAnnouncements starts a round of the announcements of uid's profile changes
// that lasts until release is called: a change of uid made meanwhile is written, and
// looked for a waiting update only after.
func (s *Store) HoldProfileAnnouncements(uid int64) (release func()) {
	started, hold := make(chan struct{}), make(chan struct{})
	go s.profileAnnouncements.join(uid, func() (bool, error) {
		close(started)
		<-hold
		return false, nil
	})
	<-started
	return func() { close(hold) }
}
