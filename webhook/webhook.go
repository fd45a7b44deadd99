// Package webhook delivers a tenant's events to its webhook endpoints,
// signed per the Standard Webhooks specification, at least once: an event
// is an outbox row of topic "webhook:<endpoint id>" written in the
// transaction of the change that caused it (event.Recorder, through
// Subscriptions), and Sink sends it from the outbox job, outside the
// shard's writer, retrying with backoff for about three days.
//
// It sits beside the flows (it speaks outbound HTTP, so it is not below
// the HTTP edge in the import graph): endpoints are managed here over the
// tenant's shard; api/gotrue serves them over the admin API.
package webhook

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"errors"
	"net"
	"net/url"
	"slices"
	"strings"
	"time"

	"github.com/keyshard/keyshard/auth"
	"github.com/keyshard/keyshard/engine"
	"github.com/keyshard/keyshard/event"
	"github.com/keyshard/keyshard/internal/netguard"
)

// TopicPrefix is the outbox topic prefix of webhook endpoints.
const TopicPrefix = "webhook:"

// Events an endpoint may subscribe to; "*" is all of them (not the
// endpoints' own management events, which are in the audit log).
var Events = []string{
	event.UserCreated.Name, event.UserUpdated.Name, event.UserDeleted.Name, event.UserSignedIn.Name,
	event.SessionRevoked.Name, event.PasswordChanged.Name, event.SettingsUpdated.Name, event.WebhookTest.Name,
	event.OAuthClientCreated.Name, event.OAuthClientUpdated.Name, event.OAuthClientDeleted.Name,
	event.OAuthTokenIssued.Name, event.WebhookDisabled.Name, event.UserInvited.Name, event.UserEmailConfirmed.Name,
	event.IdentityLinked.Name, event.IdentityUnlinked.Name,
}

// Endpoint is a tenant's webhook endpoint.
type Endpoint struct {
	ID             string
	URL            string
	Events         []string
	Enabled        bool
	DisabledReason string
	CreatedAt      time.Time
	UpdatedAt      time.Time

	secret, previous string
	previousUntil    time.Time
}

// wants reports whether the endpoint subscribes to an event name.
func (e *Endpoint) wants(name string) bool {
	return slices.Contains(e.Events, name) || slices.Contains(e.Events, "*") && slices.Contains(Events, name)
}

// Service manages endpoints. Safe for concurrent use.
type Service struct {
	Events *event.Recorder
	Subs   *Subscriptions
	Now    func() time.Time
	// AllowPrivate lets endpoints be on loopback or private addresses
	// (serve --outbound-allow-private; tests).
	AllowPrivate bool
}

func (s *Service) now() time.Time {
	if s.Now != nil {
		return s.Now()
	}
	return time.Now()
}

// RotationOverlap is how long a rotated secret still signs beside the new
// one, so a receiver can switch without losing events.
const RotationOverlap = 24 * time.Hour

func newID(prefix string) string {
	var b [12]byte
	_, _ = rand.Read(b[:])
	return prefix + strings.ToLower(base64.RawURLEncoding.EncodeToString(b[:]))
}

// newSecret returns a Standard Webhooks secret: whsec_ and 32 random bytes
// in base64.
func newSecret() string {
	var b [32]byte
	_, _ = rand.Read(b[:])
	return "whsec_" + base64.StdEncoding.EncodeToString(b[:])
}

func errNotFound() *engine.Error {
	return engine.NewError(engine.KindNotFound, "webhook_not_found", "Webhook endpoint not found")
}

func invalid(msg string) *engine.Error {
	return engine.NewError(engine.KindInvalid, "validation_failed", msg)
}

// checkURL accepts an absolute http(s) URL without credentials; unless
// AllowPrivate, a literal private or loopback address is refused at once
// (names are checked when they are resolved, at every delivery).
func (s *Service) checkURL(raw string) error {
	u, err := url.Parse(raw)
	if err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" || u.User != nil || u.Fragment != "" || len(raw) > 2048 {
		return invalid("url must be an absolute http or https URL without credentials or fragment")
	}
	if ip := net.ParseIP(u.Hostname()); ip != nil && !s.AllowPrivate && !netguard.PublicIP(ip) {
		return invalid("url points to a private, loopback or link-local address")
	}
	if strings.EqualFold(u.Hostname(), "localhost") && !s.AllowPrivate {
		return invalid("url points to a private, loopback or link-local address")
	}
	return nil
}

func checkEvents(evs []string) ([]string, error) {
	if len(evs) == 0 {
		return nil, invalid("events must name at least one event, or \"*\"")
	}
	out := []string{}
	for _, e := range evs {
		if e != "*" && !slices.Contains(Events, e) {
			return nil, invalid("unknown event " + strconvQuote(e))
		}
		if !slices.Contains(out, e) {
			out = append(out, e)
		}
	}
	return out, nil
}

func strconvQuote(s string) string { b, _ := json.Marshal(s); return string(b) }

const endpointColumns = `id, url, events, enabled, secret, COALESCE(previous_secret, ''), COALESCE(previous_until, 0),
	COALESCE(disabled_reason, ''), created_at, updated_at`

func scanEndpoint(row engine.Row) (*Endpoint, error) {
	var e Endpoint
	var events string
	var prevUntil, created, updated int64
	if err := row.Scan(&e.ID, &e.URL, &events, &e.Enabled, &e.secret, &e.previous, &prevUntil, &e.DisabledReason, &created, &updated); err != nil {
		return nil, err
	}
	if err := json.Unmarshal([]byte(events), &e.Events); err != nil {
		return nil, err
	}
	if prevUntil != 0 {
		e.previousUntil = time.UnixMicro(prevUntil)
	}
	e.CreatedAt, e.UpdatedAt = time.UnixMicro(created).UTC(), time.UnixMicro(updated).UTC()
	return &e, nil
}

func endpointByID(q engine.Querier, id string) (*Endpoint, error) {
	e, err := scanEndpoint(q.QueryRow(`SELECT `+endpointColumns+` FROM webhook_endpoints WHERE id = ?`, id))
	if errors.Is(err, engine.ErrNoRows) {
		return nil, errNotFound()
	}
	return e, err
}

func validEndpointID(id string) bool { return strings.HasPrefix(id, "wh_") && len(id) == 19 }

// EndpointRequest creates or changes an endpoint; nil fields are left.
type EndpointRequest struct {
	URL     *string
	Events  *[]string
	Enabled *bool
}

func (s *Service) record(tx engine.Querier, t auth.Tenant, c auth.Client, typ event.Type, data map[string]any) error {
	return s.Events.Record(tx, t.ID, &event.Event{Type: typ, Actor: c.AdminActor(), IP: c.IP, Data: data, At: s.now().UTC()})
}

// Create adds an endpoint; its secret is returned once.
func (s *Service) Create(ctx context.Context, t auth.Tenant, c auth.Client, req EndpointRequest) (*Endpoint, string, error) {
	if req.URL == nil {
		return nil, "", invalid("url is required")
	}
	if err := s.checkURL(*req.URL); err != nil {
		return nil, "", err
	}
	evs := []string{"*"}
	if req.Events != nil {
		var err error
		if evs, err = checkEvents(*req.Events); err != nil {
			return nil, "", err
		}
	}
	now := s.now().UTC().Truncate(time.Microsecond)
	e := &Endpoint{ID: newID("wh_"), URL: *req.URL, Events: evs, Enabled: req.Enabled == nil || *req.Enabled, secret: newSecret(),
		CreatedAt: now, UpdatedAt: now}
	err := t.Shard.Write(ctx, func(tx engine.Querier) error {
		ts := now.UnixMicro()
		if _, err := tx.Exec(`INSERT INTO webhook_endpoints (id, url, events, enabled, secret, created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?)`,
			e.ID, e.URL, mustJSON(e.Events), e.Enabled, e.secret, ts, ts); err != nil {
			return err
		}
		return s.record(tx, t, c, event.WebhookCreated, map[string]any{"webhook_id": e.ID, "url": e.URL})
	})
	if err != nil {
		return nil, "", err
	}
	s.Subs.Forget(t.ID)
	return e, e.secret, nil
}

func mustJSON(v any) string {
	b, err := json.Marshal(v)
	if err != nil {
		panic(err)
	}
	return string(b)
}

// List returns the tenant's endpoints, oldest first.
func (s *Service) List(ctx context.Context, t auth.Tenant) ([]*Endpoint, error) {
	var out []*Endpoint
	err := t.Shard.Read(ctx, func(q engine.Querier) error {
		rows, err := q.Query(`SELECT ` + endpointColumns + ` FROM webhook_endpoints ORDER BY created_at, id`)
		if err != nil {
			return err
		}
		defer rows.Close()
		for rows.Next() {
			e, err := scanEndpoint(rows)
			if err != nil {
				return err
			}
			out = append(out, e)
		}
		return rows.Err()
	})
	return out, err
}

// Get returns one endpoint.
func (s *Service) Get(ctx context.Context, t auth.Tenant, id string) (*Endpoint, error) {
	if !validEndpointID(id) {
		return nil, errNotFound()
	}
	var e *Endpoint
	err := t.Shard.Read(ctx, func(q engine.Querier) error {
		var err error
		e, err = endpointByID(q, id)
		return err
	})
	return e, err
}

// Update changes an endpoint; enabling it again clears why it was
// disabled.
func (s *Service) Update(ctx context.Context, t auth.Tenant, c auth.Client, id string, req EndpointRequest) (*Endpoint, error) {
	if !validEndpointID(id) {
		return nil, errNotFound()
	}
	if req.URL != nil {
		if err := s.checkURL(*req.URL); err != nil {
			return nil, err
		}
	}
	var evs []string
	if req.Events != nil {
		var err error
		if evs, err = checkEvents(*req.Events); err != nil {
			return nil, err
		}
	}
	var e *Endpoint
	now := s.now().UTC().Truncate(time.Microsecond)
	err := t.Shard.Write(ctx, func(tx engine.Querier) error {
		var err error
		if e, err = endpointByID(tx, id); err != nil {
			return err
		}
		if req.URL != nil {
			e.URL = *req.URL
		}
		if evs != nil {
			e.Events = evs
		}
		if req.Enabled != nil {
			e.Enabled = *req.Enabled
			if e.Enabled {
				e.DisabledReason = ""
			}
		}
		e.UpdatedAt = now
		var reason any
		if e.DisabledReason != "" {
			reason = e.DisabledReason
		}
		if _, err := tx.Exec(`UPDATE webhook_endpoints SET url = ?, events = ?, enabled = ?, disabled_reason = ?, updated_at = ? WHERE id = ?`,
			e.URL, mustJSON(e.Events), e.Enabled, reason, now.UnixMicro(), id); err != nil {
			return err
		}
		return s.record(tx, t, c, event.WebhookUpdated, map[string]any{"webhook_id": id})
	})
	if err != nil {
		return nil, err
	}
	s.Subs.Forget(t.ID)
	return e, nil
}

// Delete removes an endpoint, its pending deliveries and its log.
func (s *Service) Delete(ctx context.Context, t auth.Tenant, c auth.Client, id string) error {
	if !validEndpointID(id) {
		return errNotFound()
	}
	err := t.Shard.Write(ctx, func(tx engine.Querier) error {
		n, err := tx.Exec(`DELETE FROM webhook_endpoints WHERE id = ?`, id)
		if err != nil {
			return err
		}
		if n == 0 {
			return errNotFound()
		}
		if _, err := tx.Exec(`DELETE FROM outbox WHERE topic = ?`, TopicPrefix+id); err != nil {
			return err
		}
		if _, err := tx.Exec(`DELETE FROM webhook_deliveries WHERE endpoint_id = ?`, id); err != nil {
			return err
		}
		return s.record(tx, t, c, event.WebhookDeleted, map[string]any{"webhook_id": id})
	})
	if err == nil {
		s.Subs.Forget(t.ID)
	}
	return err
}

// RotateSecret gives an endpoint a new secret; the old one signs beside
// it for RotationOverlap (both signatures are sent).
func (s *Service) RotateSecret(ctx context.Context, t auth.Tenant, c auth.Client, id string) (*Endpoint, string, error) {
	if !validEndpointID(id) {
		return nil, "", errNotFound()
	}
	var e *Endpoint
	now := s.now().UTC().Truncate(time.Microsecond)
	err := t.Shard.Write(ctx, func(tx engine.Querier) error {
		var err error
		if e, err = endpointByID(tx, id); err != nil {
			return err
		}
		e.previous, e.previousUntil, e.secret = e.secret, now.Add(RotationOverlap), newSecret()
		if _, err := tx.Exec(`UPDATE webhook_endpoints SET secret = ?, previous_secret = ?, previous_until = ?, updated_at = ? WHERE id = ?`,
			e.secret, e.previous, e.previousUntil.UnixMicro(), now.UnixMicro(), id); err != nil {
			return err
		}
		return s.record(tx, t, c, event.WebhookSecretRotated, map[string]any{"webhook_id": id})
	})
	if err != nil {
		return nil, "", err
	}
	return e, e.secret, nil
}

// Test queues a webhook.test event to one endpoint.
func (s *Service) Test(ctx context.Context, t auth.Tenant, c auth.Client, id string) (string, error) {
	if !validEndpointID(id) {
		return "", errNotFound()
	}
	var eventID string
	err := t.Shard.Write(ctx, func(tx engine.Querier) error {
		if _, err := endpointByID(tx, id); err != nil {
			return err
		}
		eventID = "evt_test_" + newID("")
		return s.Events.RecordTo(tx, t.ID, &event.Event{Type: event.WebhookTest, Actor: c.AdminActor(), IP: c.IP,
			Data: map[string]any{"webhook_id": id}, At: s.now().UTC()}, eventID, []string{TopicPrefix + id})
	})
	return eventID, err
}

// Delivery is one attempt in an endpoint's log.
type Delivery struct {
	ID        int64
	EventID   string
	EventType string
	Attempt   int
	Status    int // 0: no answer
	LatencyMS int64
	Error     string
	At        time.Time
}

// Deliveries returns the endpoint's log, newest first, before the id
// before (0: from the newest), at most limit.
func (s *Service) Deliveries(ctx context.Context, t auth.Tenant, id string, before int64, limit int) ([]Delivery, error) {
	if !validEndpointID(id) {
		return nil, errNotFound()
	}
	if limit <= 0 || limit > 1000 {
		limit = 100
	}
	if before <= 0 {
		before = 1 << 62
	}
	var out []Delivery
	err := t.Shard.Read(ctx, func(q engine.Querier) error {
		if _, err := endpointByID(q, id); err != nil {
			return err
		}
		rows, err := q.Query(`SELECT id, event_id, event_type, attempt, COALESCE(status, 0), latency_ms, COALESCE(error, ''), created_at
			FROM webhook_deliveries WHERE endpoint_id = ? AND id < ? ORDER BY id DESC LIMIT ?`, id, before, limit)
		if err != nil {
			return err
		}
		defer rows.Close()
		for rows.Next() {
			var d Delivery
			var at int64
			if err := rows.Scan(&d.ID, &d.EventID, &d.EventType, &d.Attempt, &d.Status, &d.LatencyMS, &d.Error, &at); err != nil {
				return err
			}
			d.At = time.UnixMicro(at).UTC()
			out = append(out, d)
		}
		return rows.Err()
	})
	return out, err
}

// Replay queues again the events of the endpoint's log: one delivery's
// event (deliveryID), or every event first delivered in [since, until).
// A replayed event keeps its id, the receiver's idempotency key.
func (s *Service) Replay(ctx context.Context, t auth.Tenant, c auth.Client, id string, deliveryID int64, since, until time.Time) (int, error) {
	if !validEndpointID(id) {
		return 0, errNotFound()
	}
	n := 0
	err := t.Shard.Write(ctx, func(tx engine.Querier) error {
		n = 0
		if _, err := endpointByID(tx, id); err != nil {
			return err
		}
		q, args := `SELECT event_id, event_type, payload, MIN(created_at) FROM webhook_deliveries WHERE endpoint_id = ? AND id = ? GROUP BY event_id, event_type, payload`, []any{id, deliveryID}
		if deliveryID == 0 {
			q = `SELECT event_id, event_type, payload, MIN(created_at) FROM webhook_deliveries WHERE endpoint_id = ? AND created_at >= ? AND created_at < ?
				GROUP BY event_id, event_type, payload ORDER BY MIN(created_at) LIMIT 10000`
			args = []any{id, since.UnixMicro(), until.UnixMicro()}
		}
		rows, err := tx.Query(q, args...)
		if err != nil {
			return err
		}
		type ev struct {
			id, typ, payload string
		}
		var evs []ev
		seen := map[string]bool{}
		for rows.Next() {
			var e ev
			var at int64
			if err := rows.Scan(&e.id, &e.typ, &e.payload, &at); err != nil {
				rows.Close()
				return err
			}
			if !seen[e.id] {
				seen[e.id] = true
				evs = append(evs, e)
			}
		}
		rows.Close()
		if err := rows.Err(); err != nil {
			return err
		}
		if deliveryID != 0 && len(evs) == 0 {
			return engine.NewError(engine.KindNotFound, "webhook_delivery_not_found", "No such delivery of this endpoint")
		}
		now := s.now().UTC()
		for _, e := range evs {
			if err := s.Events.Enqueue(tx, t.ID, e.id, e.typ, []byte(e.payload), now, []string{TopicPrefix + id}); err != nil {
				return err
			}
		}
		n = len(evs)
		return nil
	})
	return n, err
}
