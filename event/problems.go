package event

import (
	"fmt"
	"slices"
	"strings"
)

// Problem is one way an event breaks the contract: the JSON path of the
// value at fault ("recipient.id"; "" for the message as a whole) and what
// is wrong with it, in words a publisher can act on.
type Problem struct {
	Path    string
	Message string
}

// String is "PATH: MESSAGE", or the message alone for the whole event.
func (p Problem) String() string {
	if p.Path == "" {
		return p.Message
	}
	return p.Path + ": " + p.Message
}

// Problems is the error of Decode and Validate: every problem of the
// event, in the order of the contract's fields. It wraps ErrInvalid, and
// its text is "invalid event: " followed by the problems joined by "; ".
// Get the list with errors.As:
//
//	var ps event.Problems
//	if errors.As(err, &ps) { for _, p := range ps { … p.Path … } }
type Problems []Problem

func (ps Problems) Error() string {
	s := make([]string, len(ps))
	for i, p := range ps {
		s[i] = p.String()
	}
	return ErrInvalid.Error() + ": " + strings.Join(s, "; ")
}

// Unwrap makes errors.Is(err, ErrInvalid) hold.
func (ps Problems) Unwrap() error { return ErrInvalid }

// Paths lists the paths of the problems, in order.
func (ps Problems) Paths() []string {
	s := make([]string, len(ps))
	for i, p := range ps {
		s[i] = p.Path
	}
	return s
}

// err returns ps as an error, nil when there is no problem.
func (ps Problems) err() error {
	if len(ps) == 0 {
		return nil
	}
	return ps
}

// add records a problem at path, once.
func (ps *Problems) add(path, format string, args ...any) {
	p := Problem{Path: path, Message: fmt.Sprintf(format, args...)}
	for _, q := range *ps {
		if q == p {
			return
		}
	}
	*ps = append(*ps, p)
}

// covers reports whether path, or an object that holds it, already has a
// problem: a value that did not decode is not also "required".
func (ps Problems) covers(path string) bool {
	for _, p := range ps {
		if p.Path == path || p.Path == "" || strings.HasPrefix(path, p.Path+".") {
			return true
		}
	}
	return false
}

// fieldOrder ranks paths in the order of the contract's fields, so that a
// list of problems reads like the event.
var fieldOrder = func() map[string]int {
	rank := map[string]int{"": 0}
	for _, k := range contractKeys[""] {
		rank[k] = len(rank)
		for _, sub := range contractKeys[k] {
			rank[k+"."+sub] = len(rank)
		}
	}
	return rank
}()

// sort orders ps by the contract's fields; a key that differs from a
// field's only by case sorts with it, unknown keys last.
func (ps Problems) sort() {
	rank := func(path string) int {
		for p := strings.ToLower(path); ; {
			if r, ok := fieldOrder[p]; ok {
				return r
			}
			i := strings.LastIndexByte(p, '.')
			if i < 0 {
				return len(fieldOrder)
			}
			p = p[:i]
		}
	}
	slices.SortStableFunc(ps, func(a, b Problem) int { return rank(a.Path) - rank(b.Path) })
}
