package update

// JournalReserve is journalReserve, for tests outside the package.
const JournalReserve = journalReserve

// SetFreeSpace makes s see f's answer as its filesystem's free space.
func SetFreeSpace(s *Store, f func(dir string) (uint64, error)) { s.freeSpace = f }
