package transport

// AuthEnabled tells the external tests whether the backend authenticates.
func (s *SMTP) AuthEnabled() bool { return s.auth }
