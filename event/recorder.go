package event

import (
	"context"
	"encoding/json"
	"fmt"
	"time"

	"github.com/keyshard/keyshard/engine"
)

// Subscriptions say which events go to the outbox, and for which topics (a
// topic is the sink that delivers it: webhook, mail). Safe for concurrent
// use; called inside a shard's writer, so it must answer from memory.
type Subscriptions interface {
	// Topics returns the topics subscribed to events named name in the
	// tenant, none when no sink wants them. tx is the write's transaction,
	// for a subscription kept in the tenant's shard (read once, then
	// cached).
	Topics(tx engine.Querier, tenantID, name string) ([]string, error)
}

// Static subscribes topics to event names in every tenant: event name →
// topics.
type Static map[string][]string

// Topics implements Subscriptions.
func (s Static) Topics(_ engine.Querier, _, name string) ([]string, error) { return s[name], nil }

// All is the topics of every one of its subscriptions.
type All []Subscriptions

// Topics implements Subscriptions.
func (a All) Topics(tx engine.Querier, tenantID, name string) ([]string, error) {
	var out []string
	for _, s := range a {
		if s == nil {
			continue
		}
		t, err := s.Topics(tx, tenantID, name)
		if err != nil {
			return nil, err
		}
		out = append(out, t...)
	}
	return out, nil
}

// Recorder writes events inside the writes that cause them. Safe for
// concurrent use.
type Recorder struct {
	subs  Subscriptions
	marks engine.WorkMarks
}

// NewRecorder returns a recorder whose events go to the outbox as subs
// says (nil: audit rows only), marking each tenant that gets an outbox row
// in marks (the catalog), so that a worker finds it.
func NewRecorder(subs Subscriptions, marks engine.WorkMarks) (*Recorder, error) {
	if subs != nil && marks == nil {
		return nil, fmt.Errorf("event recorder: subscriptions without work marks would leave outbox rows nobody finds")
	}
	return &Recorder{subs: subs, marks: marks}, nil
}

// markTimeout bounds the catalog write that marks a tenant, which runs
// inside the tenant's writer.
const markTimeout = 5 * time.Second

// Record writes ev with tx, the write transaction of the change that
// caused it (a shard's WriteFunc, or a deferred record): its audit row,
// and one outbox row per subscribed topic. A tenant that gets an outbox
// row is marked before the transaction commits, so that committed work is
// never unmarked; if the write then fails, the mark only costs a visit.
func (r *Recorder) Record(tx engine.Querier, tenantID string, ev *Event) error {
	at := ev.At.UnixMicro()
	if err := audit(tx, ev, at); err != nil {
		return err
	}
	if r == nil || r.subs == nil {
		return nil
	}
	topics, err := r.subs.Topics(tx, tenantID, ev.Type.Name)
	if err != nil {
		return err
	}
	return r.enqueue(tx, tenantID, ev, newID(), topics)
}

// RecordTo writes ev's audit row and its outbox rows for the given topics
// only, whoever subscribes (a webhook endpoint's test event). id, when
// not empty, is the event's id (a replay keeps the id it was first
// delivered with, the receiver's idempotency key).
func (r *Recorder) RecordTo(tx engine.Querier, tenantID string, ev *Event, id string, topics []string) error {
	if err := audit(tx, ev, ev.At.UnixMicro()); err != nil {
		return err
	}
	if r == nil || r.marks == nil {
		return fmt.Errorf("event recorder: no work marks for the outbox")
	}
	if id == "" {
		id = newID()
	}
	return r.enqueue(tx, tenantID, ev, id, topics)
}

// Enqueue writes outbox rows of an already recorded event again, with its
// original payload (a replay): no audit row.
func (r *Recorder) Enqueue(tx engine.Querier, tenantID, eventID, eventType string, payload []byte, at time.Time, topics []string) error {
	if r == nil || r.marks == nil {
		return fmt.Errorf("event recorder: no work marks for the outbox")
	}
	return r.insert(tx, tenantID, eventID, eventType, payload, at, topics)
}

func (r *Recorder) enqueue(tx engine.Querier, tenantID string, ev *Event, id string, topics []string) error {
	if len(topics) == 0 {
		return nil
	}
	payload, err := json.Marshal(envelope(id, tenantID, ev))
	if err != nil {
		return fmt.Errorf("event %s: %w", ev.Type.Name, err)
	}
	return r.insert(tx, tenantID, id, ev.Type.Name, payload, ev.At, topics)
}

func (r *Recorder) insert(tx engine.Querier, tenantID, id, typ string, payload []byte, when time.Time, topics []string) error {
	ctx, cancel := context.WithTimeout(context.Background(), markTimeout)
	defer cancel()
	if err := r.marks.MarkWork(ctx, tenantID, when); err != nil {
		return err
	}
	at := when.UnixMicro()
	for _, topic := range topics {
		if _, err := tx.Exec(`INSERT INTO outbox (event_id, topic, event_type, payload, attempts, next_at, created_at)
			VALUES (?, ?, ?, ?, 0, ?, ?)`, id, topic, typ, string(payload), at, at); err != nil {
			return err
		}
	}
	return nil
}

// nilUUID is the actor id GoTrue's audit log gives an administrator acting
// with the service role, which is no user.
const nilUUID = "00000000-0000-0000-0000-000000000000"

// auditUsername names an actor that is not a user, in the audit log's
// actor_username: GoTrue's "service_role" for the tenant's service key.
var auditUsername = map[ActorKind]string{ActorServiceKey: "service_role", ActorPlatform: "platform_admin"}

// audit inserts the event's audit row, shaped as GoTrue's: a user acting is
// the actor (id, email); the tenant's administrator is the nil UUID named
// "service_role", and the user it acted on is in the payload's traits
// (user_id, user_email).
func audit(tx engine.Querier, ev *Event, at int64) error {
	var actorID, actorEmail any
	if ev.Actor.ID != "" {
		actorID = ev.Actor.ID
	}
	if ev.Actor.Email != "" {
		actorEmail = ev.Actor.Email
	}
	if name, ok := auditUsername[ev.Actor.Kind]; ok {
		actorID, actorEmail = nilUUID, name
	}
	payload := ev.Data
	if ev.Target.ID != "" {
		payload = make(map[string]any, len(ev.Data)+1)
		for k, v := range ev.Data {
			payload[k] = v
		}
		traits := map[string]any{"user_id": ev.Target.ID}
		if ev.Target.Email != "" {
			traits["user_email"] = ev.Target.Email
		}
		payload["traits"] = traits
	}
	text := "{}"
	if len(payload) > 0 {
		b, err := json.Marshal(payload)
		if err != nil {
			return fmt.Errorf("audit payload of %s: %w", ev.Type.Action, err)
		}
		text = string(b)
	}
	_, err := tx.Exec(`INSERT INTO audit_log (action, actor_id, actor_email, ip, payload, created_at) VALUES (?, ?, ?, ?, ?, ?)`,
		ev.Type.Action, actorID, actorEmail, ev.IP, text, at)
	return err
}

// Envelope is an event as its outbox rows carry it (version 1).
type Envelope struct {
	ID         string         `json:"id"`
	Type       string         `json:"type"`
	Version    int            `json:"version"`
	TenantID   string         `json:"tenant_id"`
	OccurredAt time.Time      `json:"occurred_at"`
	Actor      envelopeActor  `json:"actor"`
	Target     *envelopeUser  `json:"target,omitempty"`
	Data       map[string]any `json:"data"`
}

type envelopeActor struct {
	Kind  ActorKind `json:"kind"`
	ID    string    `json:"id,omitempty"`
	Email string    `json:"email,omitempty"`
}

type envelopeUser struct {
	ID    string `json:"id"`
	Email string `json:"email,omitempty"`
}

func envelope(id, tenantID string, ev *Event) Envelope {
	e := Envelope{ID: id, Type: ev.Type.Name, Version: 1, TenantID: tenantID, OccurredAt: ev.At.UTC(),
		Actor: envelopeActor{Kind: ev.Actor.Kind, ID: ev.Actor.ID, Email: ev.Actor.Email}, Data: ev.Data}
	if ev.Target.ID != "" {
		e.Target = &envelopeUser{ID: ev.Target.ID, Email: ev.Target.Email}
	}
	if e.Data == nil {
		e.Data = map[string]any{}
	}
	return e
}
