package event

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"strings"
	"sync"
	"time"

	"github.com/keyshard/keyshard/engine"
)

// Message is one outbox row due for delivery.
type Message struct {
	ID        int64  // the row's id, unique in its tenant
	EventID   string // the event's id: the same on every delivery of it, and for every topic
	Topic     string
	EventType string
	Payload   []byte // the Envelope as JSON
	Attempts  int    // deliveries tried before this one
	CreatedAt time.Time
}

// Sink delivers one topic's messages (webhook calls, mails). Deliver is
// called outside any shard write, with the tenant's shard pinned, and may
// take its time within ctx; an error schedules the message again, later,
// unless it is a Drop. Safe for concurrent use.
//
// A sink is found by its topic, or by the topic's part before a colon:
// the sink "webhook" delivers the topics "webhook:<endpoint>".
type Sink interface {
	Deliver(ctx context.Context, t *engine.TenantShard, m Message) error
}

// Backoffer is a sink with its own retry schedule: the delay before the
// attempt after the given number of failed ones.
type Backoffer interface {
	Backoff(attempts int) time.Duration
}

// Drop is a delivery that failed for good: the message is removed.
type Drop struct{ Err error }

func (d *Drop) Error() string { return "dropped: " + d.Err.Error() }
func (d *Drop) Unwrap() error { return d.Err }

// Outbox delivers a tenant's outbox rows to the sinks of their topics: an
// engine.Job. Each turn reads the due rows (at most Batch) on a reader,
// delivers them outside the writer, then in one write deletes the
// delivered rows and puts off the others with a growing delay. Delivery is
// at least once: a crash between a delivery and its delete delivers again,
// with the same event id.
type Outbox struct {
	Sinks map[string]Sink // by topic
	// Batch bounds the rows one turn delivers (default 100).
	Batch int
	// Backoff is the delay before the attempt after the given number of
	// failed ones (default: 5 s doubling to 1 h, with jitter).
	Backoff func(attempts int) time.Duration
	// Now is the clock (default time.Now).
	Now func() time.Time
	// Timeout bounds one delivery (default 30 s); past it the delivery
	// counts as failed.
	Timeout time.Duration
	// Parallel is how many of a turn's rows are delivered at once
	// (default 8): one slow receiver does not hold the others back.
	Parallel int
}

// sink returns the sink of a topic.
func (o *Outbox) sink(topic string) (Sink, bool) {
	if s, ok := o.Sinks[topic]; ok {
		return s, true
	}
	if prefix, _, ok := strings.Cut(topic, ":"); ok {
		s, ok := o.Sinks[prefix]
		return s, ok
	}
	return nil, false
}

var _ engine.Job = (*Outbox)(nil)

// noSinkDelay puts off rows of a topic nothing delivers (a sink configured
// away since they were written).
const noSinkDelay = time.Hour

func (o *Outbox) now() time.Time {
	if o.Now != nil {
		return o.Now()
	}
	return time.Now()
}

func (o *Outbox) backoff(attempts int) time.Duration {
	if o.Backoff != nil {
		return o.Backoff(attempts)
	}
	d := 5 * time.Second << min(attempts, 10)
	if d > time.Hour {
		d = time.Hour
	}
	return d/2 + rand.N(d/2+1) // half to all of it: receivers are not hit in step
}

// Run implements engine.Job.
func (o *Outbox) Run(ctx context.Context, t *engine.TenantShard) error {
	batch := o.Batch
	if batch <= 0 {
		batch = 100
	}
	now := o.now()
	var due []Message
	err := t.Read(ctx, func(q engine.Querier) error {
		rows, err := q.Query(`SELECT id, event_id, topic, event_type, payload, attempts, created_at FROM outbox
			WHERE next_at <= ? ORDER BY next_at, id LIMIT ?`, now.UnixMicro(), batch)
		if err != nil {
			return err
		}
		defer rows.Close()
		for rows.Next() {
			var m Message
			var payload string
			var created int64
			if err := rows.Scan(&m.ID, &m.EventID, &m.Topic, &m.EventType, &payload, &m.Attempts, &created); err != nil {
				return err
			}
			m.Payload, m.CreatedAt = []byte(payload), time.UnixMicro(created).UTC()
			due = append(due, m)
		}
		return rows.Err()
	})
	if err != nil || len(due) == 0 {
		return err
	}
	// With pipelined durability a read can see a commit whose sync has not
	// returned: nothing leaves the process on its account until it has.
	if err := engine.WaitDurable(ctx, t.ShardHandle); err != nil {
		return err
	}
	type outcome struct {
		delay time.Duration
		err   string
	}
	failed := map[int64]outcome{}
	var mu sync.Mutex
	var firstErr error
	parallel := o.Parallel
	if parallel <= 0 {
		parallel = 8
	}
	slots := make(chan struct{}, parallel)
	var wg sync.WaitGroup
	for _, m := range due {
		if ctx.Err() != nil {
			break // not tried: left as it was
		}
		sink, ok := o.sink(m.Topic)
		if !ok {
			failed[m.ID] = outcome{noSinkDelay, "no sink delivers topic " + m.Topic}
			continue
		}
		slots <- struct{}{}
		wg.Add(1)
		go func() {
			defer func() { <-slots; wg.Done() }()
			err := o.deliver(ctx, sink, t, m)
			mu.Lock()
			defer mu.Unlock()
			var drop *Drop
			switch {
			case err == nil, errors.As(err, &drop):
				failed[m.ID] = outcome{-1, ""}
			default:
				delay := o.backoff(m.Attempts)
				if b, ok := sink.(Backoffer); ok {
					delay = b.Backoff(m.Attempts)
				}
				failed[m.ID] = outcome{delay, err.Error()}
				if firstErr == nil {
					firstErr = fmt.Errorf("deliver %s %s: %w", m.Topic, m.EventID, err)
				}
			}
		}()
	}
	wg.Wait()
	done := o.now()
	err = t.Write(context.WithoutCancel(ctx), func(tx engine.Querier) error {
		for id, oc := range failed {
			if oc.delay < 0 {
				if _, err := tx.Exec(`DELETE FROM outbox WHERE id = ?`, id); err != nil {
					return err
				}
				continue
			}
			msg := oc.err
			if len(msg) > 500 {
				msg = msg[:500]
			}
			if _, err := tx.Exec(`UPDATE outbox SET attempts = attempts + 1, next_at = ?, last_error = ? WHERE id = ?`,
				done.Add(oc.delay).UnixMicro(), msg, id); err != nil {
				return err
			}
		}
		return nil
	})
	return errors.Join(err, firstErr)
}

func (o *Outbox) deliver(ctx context.Context, s Sink, t *engine.TenantShard, m Message) error {
	timeout := o.Timeout
	if timeout <= 0 {
		timeout = 30 * time.Second
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	return s.Deliver(ctx, t, m)
}

// Next implements engine.Job: the due time of the tenant's earliest row.
func (o *Outbox) Next(q engine.Querier) (time.Time, bool, error) {
	var next *int64
	if err := q.QueryRow(`SELECT MIN(next_at) FROM outbox`).Scan(&next); err != nil {
		return time.Time{}, false, err
	}
	if next == nil {
		return time.Time{}, false, nil
	}
	return time.UnixMicro(*next), true, nil
}
