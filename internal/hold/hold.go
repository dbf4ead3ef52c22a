package hold

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// Headers of a held notification (notify_held.item.<recipient>).
const (
	// HeaderSubject is the NOTIFY subject the event was published on
	// (it names the type the event must match).
	HeaderSubject = "Mailrelay-Subject"
	// HeaderDue is when the notification may go out at the earliest
	// (RFC 3339 with nanoseconds): the end of the window it joined, or
	// its own seen delay or quiet hours when they end later.
	HeaderDue = "Mailrelay-Due"
	// HeaderStreamSeq is the notification's NOTIFY stream sequence.
	HeaderStreamSeq = "Mailrelay-Stream-Seq"
)

// Item is one held notification.
type Item struct {
	Seq       uint64    // in NOTIFY_HELD
	Subject   string    // the NOTIFY subject it was published on
	Data      []byte    // the event, as published
	Due       time.Time // when it may go out
	StreamSeq uint64    // in NOTIFY
	HeldAt    time.Time // when it was stored
}

// Store holds notifications in NOTIFY_HELD. Every read goes to the stream
// leader (the stream has no direct gets), so a flush never misses what a
// relay stored just before it.
type Store struct {
	js jetstream.JetStream
	s  jetstream.Stream
}

// New wraps the NOTIFY_HELD stream.
func New(js jetstream.JetStream, s jetstream.Stream) *Store { return &Store{js: js, s: s} }

// ceilSecond is t rounded up to a whole second: schedules fire at whole
// seconds (the "@at" time is RFC 3339 without fraction), and never early.
func ceilSecond(t time.Time) time.Time {
	c := t.Truncate(time.Second)
	if c.Before(t) {
		c = c.Add(time.Second)
	}
	return c
}

// Window returns when recipient's open window closes: the time of its
// pending schedule; ok is false when none is pending.
func (s *Store) Window(ctx context.Context, recipient string) (at time.Time, ok bool, err error) {
	m, err := s.s.GetLastMsgForSubject(ctx, WindowSubject(recipient))
	if errors.Is(err, jetstream.ErrMsgNotFound) {
		return time.Time{}, false, nil
	}
	if err != nil {
		return time.Time{}, false, fmt.Errorf("held window of %s: %w", recipient, err)
	}
	v := m.Header.Get(jetstream.ScheduleHeader)
	at, perr := time.Parse(time.RFC3339, strings.TrimPrefix(v, "@at "))
	if perr != nil {
		// Not ours; treat as pending now, so that a flush soon puts it right.
		return m.Time, true, nil
	}
	return at, true, nil
}

// Hold stores a notification for recipient and makes sure a window will
// flush it. A window already open keeps its time, and the notification
// joins it (due when it closes, or at notBefore when that is later: the
// flush then leaves it for the next window); otherwise it opens one that
// closes at windowEnd. It returns when the notification is due.
//
// The order makes it safe against a window closing meanwhile: the item is
// stored first, then the window is looked at again, and opened anew if it
// fired in between (its flush may have listed the items before this one).
func (s *Store) Hold(ctx context.Context, recipient string, it Item, windowEnd, notBefore time.Time) (time.Time, error) {
	open, ok, err := s.Window(ctx, recipient)
	if err != nil {
		return time.Time{}, err
	}
	due := notBefore
	if !ok {
		due = windowEnd
	} else if open.After(due) {
		due = open
	}
	due = ceilSecond(due)
	msg := nats.NewMsg(ItemSubject(recipient))
	msg.Data = it.Data
	msg.Header.Set(HeaderSubject, it.Subject)
	msg.Header.Set(HeaderDue, due.UTC().Format(time.RFC3339Nano))
	msg.Header.Set(HeaderStreamSeq, strconv.FormatUint(it.StreamSeq, 10))
	if _, err := s.js.PublishMsg(ctx, msg, jetstream.WithExpectStream(Stream)); err != nil {
		return time.Time{}, fmt.Errorf("hold for %s: %w", recipient, err)
	}
	if ok {
		if _, ok, err = s.Window(ctx, recipient); err != nil {
			return time.Time{}, err
		}
	}
	if !ok {
		if err := s.schedule(ctx, recipient, due); err != nil {
			return time.Time{}, err
		}
	}
	return due, nil
}

// Schedule makes recipient's window close no later than at: a pending
// schedule at or before at is kept, a later one is replaced.
func (s *Store) Schedule(ctx context.Context, recipient string, at time.Time) error {
	at = ceilSecond(at)
	cur, ok, err := s.Window(ctx, recipient)
	if err != nil {
		return err
	}
	if ok && !cur.After(at) {
		return nil
	}
	return s.schedule(ctx, recipient, at)
}

// schedule publishes recipient's schedule for at (one per subject: it
// replaces a pending one). A time in the past fires at once.
func (s *Store) schedule(ctx context.Context, recipient string, at time.Time) error {
	_, err := s.js.Publish(ctx, WindowSubject(recipient), nil, jetstream.WithExpectStream(Stream),
		jetstream.WithScheduleAt(ceilSecond(at)), jetstream.WithScheduleTarget(DueSubject(recipient)))
	if err != nil {
		return fmt.Errorf("schedule the window of %s: %w", recipient, err)
	}
	return nil
}

// Items returns recipient's held notifications in the order they were
// stored, at most max of them; more reports whether there are others.
func (s *Store) Items(ctx context.Context, recipient string, max int) (items []Item, more bool, err error) {
	subj := ItemSubject(recipient)
	for seq := uint64(1); ; {
		m, err := s.s.GetMsg(ctx, seq, jetstream.WithGetMsgSubject(subj))
		if errors.Is(err, jetstream.ErrMsgNotFound) {
			return items, false, nil
		}
		if err != nil {
			return nil, false, fmt.Errorf("held notifications of %s: %w", recipient, err)
		}
		if len(items) == max {
			return items, true, nil
		}
		items = append(items, itemOf(m))
		seq = m.Sequence + 1
	}
}

func itemOf(m *jetstream.RawStreamMsg) Item {
	it := Item{Seq: m.Sequence, Subject: m.Header.Get(HeaderSubject), Data: m.Data, HeldAt: m.Time}
	it.Due, _ = time.Parse(time.RFC3339Nano, m.Header.Get(HeaderDue))
	it.StreamSeq, _ = strconv.ParseUint(m.Header.Get(HeaderStreamSeq), 10, 64)
	return it
}

// Remove deletes held notifications of recipient. When they are every
// item up to the last of them, one purge of the subject does it.
func (s *Store) Remove(ctx context.Context, recipient string, seqs []uint64, prefix bool) error {
	if len(seqs) == 0 {
		return nil
	}
	if prefix {
		last := seqs[0]
		for _, q := range seqs {
			last = max(last, q)
		}
		err := s.s.Purge(ctx, jetstream.WithPurgeSubject(ItemSubject(recipient)), jetstream.WithPurgeSequence(last+1))
		if err != nil {
			return fmt.Errorf("remove held notifications of %s: %w", recipient, err)
		}
		return nil
	}
	for _, q := range seqs {
		if err := s.s.DeleteMsg(ctx, q); err != nil && !errors.Is(err, jetstream.ErrMsgNotFound) {
			return fmt.Errorf("remove held notification %d of %s: %w", q, recipient, err)
		}
	}
	return nil
}

// Done removes a flushed window's due message (best effort: it is acked
// already; what stays is only clutter).
func (s *Store) Done(ctx context.Context, seq uint64) {
	_ = s.s.DeleteMsg(ctx, seq)
}

// Stats is what is held.
type Stats struct {
	Notifications int       // held notifications
	Recipients    int       // recipients with held notifications
	Oldest        time.Time // when the oldest was stored; zero when none
}

// Stats counts what is held, and finds recipients whose held notifications
// have neither a pending window nor a fired one waiting for its flush
// (orphans: a relay died between storing a notification and opening its
// window, the window's message was lost with a store, …).
func (s *Store) Stats(ctx context.Context) (st Stats, orphans []string, err error) {
	subjects := func(filter string) (map[string]uint64, error) {
		info, err := s.s.Info(ctx, jetstream.WithSubjectFilter(filter))
		if err != nil {
			return nil, fmt.Errorf("held: stream info: %w", err)
		}
		return info.State.Subjects, nil
	}
	items, err := subjects(ItemPrefix + ">")
	if err != nil {
		return st, nil, err
	}
	if len(items) == 0 {
		return st, nil, nil
	}
	windows, err := subjects(WindowPrefix + ">")
	if err != nil {
		return st, nil, err
	}
	due, err := subjects(DueSubjects)
	if err != nil {
		return st, nil, err
	}
	for subj, n := range items {
		st.Notifications += int(n)
		st.Recipients++
		r := strings.TrimPrefix(subj, ItemPrefix)
		if windows[WindowSubject(r)] == 0 && due[DueSubject(r)] == 0 {
			orphans = append(orphans, r)
		}
	}
	m, err := s.s.GetMsg(ctx, 1, jetstream.WithGetMsgSubject(ItemPrefix+">"))
	if err == nil {
		st.Oldest = m.Time
	} else if !errors.Is(err, jetstream.ErrMsgNotFound) {
		return st, orphans, fmt.Errorf("held: oldest: %w", err)
	}
	return st, orphans, nil
}

// SeenStore answers from notify_seen whether a recipient saw a
// notification in the app: a key that exists (any value) means seen.
type SeenStore struct{ kv jetstream.KeyValue }

// NewSeen wraps the notify_seen bucket.
func NewSeen(kv jetstream.KeyValue) *SeenStore { return &SeenStore{kv: kv} }

// Seen reports whether id is in notify_seen.
func (s *SeenStore) Seen(ctx context.Context, id string) (bool, error) {
	_, err := s.kv.Get(ctx, id)
	switch {
	case err == nil:
		return true, nil
	case errors.Is(err, jetstream.ErrKeyNotFound):
		return false, nil
	}
	return false, fmt.Errorf("notify_seen %q: %w", id, err)
}

// Sweep looks at what is held: it returns the figures, and gives every
// orphan (held notifications with no window pending or fired) a window
// that closes at now. It returns how many orphans it found.
func (s *Store) Sweep(ctx context.Context, now time.Time) (Stats, int, error) {
	st, orphans, err := s.Stats(ctx)
	if err != nil {
		return st, 0, err
	}
	for _, r := range orphans {
		if err := s.Schedule(ctx, r, now); err != nil {
			return st, len(orphans), err
		}
	}
	return st, len(orphans), nil
}
