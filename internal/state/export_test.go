package state

// Subject is the subject the asynchronous writes publish key's value to.
func (s *Store) Subject(key string) string { return s.subject(key) }
