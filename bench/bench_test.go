package main

import (
	"context"
	"sync/atomic"
	"testing"
	"time"

	"github.com/mailrelay/mailrelay/compose"
	"github.com/mailrelay/mailrelay/consumer"
	"github.com/mailrelay/mailrelay/event"
	"github.com/mailrelay/mailrelay/internal/state"
	"github.com/mailrelay/mailrelay/internal/transport"
	"github.com/mailrelay/mailrelay/prefs"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// BenchmarkDecode measures event.Decode of each type (the generated bench
// events, 400–700 bytes).
func BenchmarkDecode(b *testing.B) {
	now := time.Now()
	for i, typ := range event.Types {
		subj, data := encode(benchEvent("dec", i, now))
		b.Run(string(typ), func(b *testing.B) {
			b.ReportAllocs()
			b.SetBytes(int64(len(data)))
			for b.Loop() {
				if _, err := event.Decode(subj, data, 0); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkDecide measures consumer Handler.Handle plus Apply for one
// delivery with in-memory fakes (preferences, ledger, sender, message), so
// it is the relay's own CPU cost per mail outside NATS and SMTP: decode,
// the decision, compose, the ledger records (encoded by the fakes as the
// real store would) and the outcome log line (a no-op logger here).
func BenchmarkDecide(b *testing.B) {
	tpl, err := compose.LoadTemplates("")
	if err != nil {
		b.Fatal(err)
	}
	cfg := compose.Config{From: compose.Address{Name: "Acme", Email: "notify@example.com"},
		BaseURL: "https://app.example.com", Templates: tpl}
	composeFn := func(ev *event.Event, now time.Time, o compose.Options) (*compose.Message, error) {
		return compose.ComposeFor(ev, cfg, now, o)
	}
	now := time.Now()
	cases := []struct {
		name string
		on   bool
		send consumer.Sender
	}{
		{"sent", true, nopSender{}},
		{"sent+render", true, renderSender{}},
		{"opted_out", false, nopSender{}},
	}
	for _, c := range cases {
		b.Run(c.name, func(b *testing.B) {
			h := consumer.NewHandler(consumer.Config{Configured: true}, c.send, fakePrefs{on: c.on}, fakeLedger{}, composeFn)
			msgs := make([]*fakeMsg, len(event.Types))
			for i := range msgs {
				subj, data := encode(benchEvent("dec", i, now))
				msgs[i] = &fakeMsg{subject: subj, data: data, seq: uint64(i + 1)}
			}
			b.ReportAllocs()
			i := 0
			for b.Loop() {
				m := msgs[i%len(msgs)]
				i++
				out := h.Handle(context.Background(), m)
				if want := consumer.Ack; out.Action != want {
					b.Fatalf("action %v (%s), want %v", out.Action, out.Reason, want)
				}
				if err := h.Apply(m, out); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkRender measures transport.Render (compose.Message to go-mail
// Msg), the step the SMTP backend runs before each send.
func BenchmarkRender(b *testing.B) {
	tpl, _ := compose.LoadTemplates("")
	cfg := compose.Config{From: compose.Address{Name: "Acme", Email: "notify@example.com"},
		BaseURL: "https://app.example.com", Templates: tpl}
	m, err := compose.Compose(benchEvent("dec", 2, time.Now()), cfg, time.Now())
	if err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	for b.Loop() {
		if _, err := transport.Render(m); err != nil {
			b.Fatal(err)
		}
	}
}

type fakePrefs struct{ on bool }

func (p fakePrefs) Email(context.Context, string, event.Type) (prefs.Answer, error) {
	return prefs.Answer{On: p.on}, nil
}

// fakeLedger has no records and accepts every write, encoding it as the
// real store does.
type fakeLedger struct{}

var ledgerRev atomic.Uint64

func (fakeLedger) Get(context.Context, string) (state.Record, uint64, error) {
	return state.Record{}, 0, state.ErrNotFound
}
func (fakeLedger) Put(_ context.Context, _ string, r state.Record) error {
	_, err := jsonRecord(r)
	return err
}
func (fakeLedger) Swap(_ context.Context, _ string, r state.Record, _ uint64) (uint64, error) {
	_, err := jsonRecord(r)
	return ledgerRev.Add(1), err
}
func (l fakeLedger) SwapAsync(ctx context.Context, k string, r state.Record, rev uint64) func() (uint64, error) {
	n, err := l.Swap(ctx, k, r, rev)
	return func() (uint64, error) { return n, err }
}
func (l fakeLedger) PutAsync(k string, r state.Record) (state.Pending, error) {
	return stored{l.Put(context.Background(), k, r)}, nil
}
func (l fakeLedger) CreateAsync(k string, r state.Record) (state.Pending, error) {
	return l.PutAsync(k, r)
}

// stored is a write already done.
type stored struct{ err error }

func (s stored) Wait() error { return s.err }

type nopSender struct{}

func (nopSender) Send(context.Context, *compose.Message) error { return nil }

// renderSender renders the message like the SMTP backend, then drops it.
type renderSender struct{}

func (renderSender) Send(_ context.Context, m *compose.Message) error {
	_, err := transport.Render(m)
	return err
}

// fakeMsg is a delivered JetStream message whose acks go nowhere.
type fakeMsg struct {
	subject string
	data    []byte
	seq     uint64
}

func (m *fakeMsg) Metadata() (*jetstream.MsgMetadata, error) {
	return &jetstream.MsgMetadata{Sequence: jetstream.SequencePair{Stream: m.seq, Consumer: m.seq},
		NumDelivered: 1, Stream: "NOTIFY", Consumer: "mailrelay", Timestamp: time.Now()}, nil
}
func (m *fakeMsg) Data() []byte                     { return m.data }
func (m *fakeMsg) Headers() nats.Header             { return nil }
func (m *fakeMsg) Subject() string                  { return m.subject }
func (m *fakeMsg) Reply() string                    { return "" }
func (m *fakeMsg) Ack() error                       { return nil }
func (m *fakeMsg) DoubleAck(context.Context) error  { return nil }
func (m *fakeMsg) Nak() error                       { return nil }
func (m *fakeMsg) NakWithDelay(time.Duration) error { return nil }
func (m *fakeMsg) InProgress() error                { return nil }
func (m *fakeMsg) Term() error                      { return nil }
func (m *fakeMsg) TermWithReason(string) error      { return nil }
