package webhook

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"strconv"
	"strings"
	"time"

	standardwebhooks "github.com/standard-webhooks/standard-webhooks/libraries/go"

	"github.com/keyshard/keyshard/engine"
	"github.com/keyshard/keyshard/event"
	"github.com/keyshard/keyshard/internal/netguard"
)

// Schedule is the delay before each retry after a failed attempt: ten
// attempts over about three days (75 h), as the Standard Webhooks
// guidance spaces them. Each delay gets ±10 % jitter.
var Schedule = []time.Duration{
	5 * time.Second, 5 * time.Minute, 30 * time.Minute, 2 * time.Hour, 5 * time.Hour,
	10 * time.Hour, 10 * time.Hour, 24 * time.Hour, 24 * time.Hour,
}

// LogRetention is how long an endpoint's delivery log keeps an attempt.
const LogRetention = 30 * 24 * time.Hour

// SinkConfig configures a Sink.
type SinkConfig struct {
	Events *event.Recorder // records webhook.disabled
	Subs   *Subscriptions  // forgotten when an endpoint is disabled
	// Now is the service clock, for the log and the schedule (default
	// time.Now). Signatures carry the real time: receivers check it.
	Now func() time.Time
	// AllowPrivate lets deliveries reach loopback, private, link-local
	// and metadata addresses (serve --outbound-allow-private).
	AllowPrivate bool
	// Timeout bounds one request (default 10 s); MaxConnsPerHost the
	// connections to one receiver (default 8).
	Timeout         time.Duration
	MaxConnsPerHost int
	// Schedule overrides the retry schedule (tests).
	Schedule []time.Duration
}

// Sink delivers the outbox topics "webhook:<endpoint id>": an
// event.Sink. Safe for concurrent use.
type Sink struct {
	cfg    SinkConfig
	client *http.Client
}

var _ event.Sink = (*Sink)(nil)
var _ event.Backoffer = (*Sink)(nil)

// ErrPrivateAddress refuses a connection to an address that is not public.
var ErrPrivateAddress = netguard.ErrPrivateAddress

// NewSink returns a sink. Its HTTP client follows no redirect, uses no
// proxy, and checks every address it connects to after DNS resolution.
func NewSink(cfg SinkConfig) *Sink {
	if cfg.Timeout <= 0 {
		cfg.Timeout = 10 * time.Second
	}
	if cfg.MaxConnsPerHost <= 0 {
		cfg.MaxConnsPerHost = 8
	}
	if len(cfg.Schedule) == 0 {
		cfg.Schedule = Schedule
	}
	d := &net.Dialer{Timeout: 5 * time.Second}
	if !cfg.AllowPrivate {
		d.Control = netguard.Control
	}
	tr := &http.Transport{
		Proxy:                 nil,
		DialContext:           d.DialContext,
		TLSHandshakeTimeout:   5 * time.Second,
		ResponseHeaderTimeout: cfg.Timeout,
		MaxConnsPerHost:       cfg.MaxConnsPerHost,
		MaxIdleConnsPerHost:   cfg.MaxConnsPerHost,
		IdleConnTimeout:       60 * time.Second,
	}
	return &Sink{cfg: cfg, client: &http.Client{Transport: tr, Timeout: cfg.Timeout,
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}}
}

func (s *Sink) now() time.Time {
	if s.cfg.Now != nil {
		return s.cfg.Now()
	}
	return time.Now()
}

// Backoff implements event.Backoffer.
func (s *Sink) Backoff(attempts int) time.Duration {
	d := s.cfg.Schedule[min(attempts, len(s.cfg.Schedule)-1)]
	return d + time.Duration((rand.Float64()*0.2-0.1)*float64(d))
}

// Deliver implements event.Sink: one signed POST of the event to its
// endpoint, logged. A message of an endpoint deleted or disabled since is
// dropped; one that failed its last attempt disables the endpoint.
func (s *Sink) Deliver(ctx context.Context, t *engine.TenantShard, m event.Message) error {
	id := strings.TrimPrefix(m.Topic, TopicPrefix)
	var e *Endpoint
	err := t.Read(ctx, func(q engine.Querier) error {
		var err error
		e, err = endpointByID(q, id)
		return err
	})
	var ee *engine.Error
	if errors.As(err, &ee) && ee.Kind == engine.KindNotFound {
		return &event.Drop{Err: err}
	}
	if err != nil {
		return err
	}
	if !e.Enabled {
		return &event.Drop{Err: fmt.Errorf("endpoint %s is disabled", id)}
	}
	attempt := m.Attempts + 1
	start := time.Now()
	status, sendErr := s.send(ctx, e, m)
	latency := time.Since(start)
	s.log(ctx, t, e.ID, m, attempt, status, latency, sendErr)
	if sendErr == nil {
		return nil
	}
	if attempt > len(s.cfg.Schedule) {
		s.disable(ctx, t, e, sendErr)
		return &event.Drop{Err: sendErr}
	}
	return sendErr
}

// send POSTs the event, signed with the endpoint's secret and, during a
// rotation's overlap, its previous one too.
func (s *Sink) send(ctx context.Context, e *Endpoint, m event.Message) (int, error) {
	ts := time.Now()
	var sigs []string
	for _, secret := range []string{e.secret, e.previous} {
		if secret == "" || secret == e.previous && !s.now().Before(e.previousUntil) {
			continue
		}
		wh, err := standardwebhooks.NewWebhook(secret)
		if err != nil {
			return 0, fmt.Errorf("endpoint secret: %w", err)
		}
		sig, err := wh.Sign(m.EventID, ts, m.Payload)
		if err != nil {
			return 0, err
		}
		sigs = append(sigs, sig)
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, e.URL, bytes.NewReader(m.Payload))
	if err != nil {
		return 0, err
	}
	h := req.Header
	h.Set("Content-Type", "application/json")
	h.Set("User-Agent", "Keyshard-Webhooks/1")
	h.Set(standardwebhooks.HeaderWebhookID, m.EventID)
	h.Set(standardwebhooks.HeaderWebhookTimestamp, strconv.FormatInt(ts.Unix(), 10))
	h.Set(standardwebhooks.HeaderWebhookSignature, strings.Join(sigs, " "))
	res, err := s.client.Do(req)
	if err != nil {
		return 0, err
	}
	defer res.Body.Close()
	snippet, _ := io.ReadAll(io.LimitReader(res.Body, 256))
	_, _ = io.Copy(io.Discard, io.LimitReader(res.Body, 1<<20))
	if res.StatusCode/100 != 2 {
		msg := fmt.Sprintf("receiver answered %d", res.StatusCode)
		if len(bytes.TrimSpace(snippet)) > 0 {
			msg += ": " + string(bytes.TrimSpace(snippet))
		}
		return res.StatusCode, errors.New(msg)
	}
	return res.StatusCode, nil
}

// log writes the attempt to the endpoint's log through the shard's
// deferred buffer (or a write, when the buffer is full), and lets go of
// attempts older than LogRetention.
func (s *Sink) log(ctx context.Context, t *engine.TenantShard, endpointID string, m event.Message, attempt, status int, latency time.Duration, err error) {
	at := s.now().UnixMicro()
	var st, msg any
	if status != 0 {
		st = status
	}
	if err != nil {
		text := err.Error()
		if len(text) > 300 {
			text = text[:300]
		}
		msg = text
	}
	op := func(tx engine.Querier) error {
		if _, err := tx.Exec(`INSERT INTO webhook_deliveries (endpoint_id, event_id, event_type, attempt, status, latency_ms, error, payload, created_at)
			VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)`, endpointID, m.EventID, m.EventType, attempt, st, latency.Milliseconds(), msg, string(m.Payload), at); err != nil {
			return err
		}
		_, err := tx.Exec(`DELETE FROM webhook_deliveries WHERE created_at < ?`, at-LogRetention.Microseconds())
		return err
	}
	if derr := t.Defer("", op); errors.Is(derr, engine.ErrOverloaded) {
		_ = t.Write(context.WithoutCancel(ctx), op)
	}
}

// disable turns off an endpoint whose event failed its last attempt, and
// says so: the endpoint's disabled_reason and a webhook.disabled event.
func (s *Sink) disable(ctx context.Context, t *engine.TenantShard, e *Endpoint, cause error) {
	reason := "deliveries failed for three days: " + cause.Error()
	if len(reason) > 300 {
		reason = reason[:300]
	}
	now := s.now().UTC()
	_ = t.Write(context.WithoutCancel(ctx), func(tx engine.Querier) error {
		n, err := tx.Exec(`UPDATE webhook_endpoints SET enabled = 0, disabled_reason = ?, updated_at = ? WHERE id = ? AND enabled = 1`,
			reason, now.UnixMicro(), e.ID)
		if err != nil || n == 0 {
			return err
		}
		return s.cfg.Events.Record(tx, t.Tenant.ID, &event.Event{Type: event.WebhookDisabled, Actor: event.Actor{Kind: event.ActorPlatform},
			Data: map[string]any{"webhook_id": e.ID, "url": e.URL, "reason": reason}, At: now})
	})
	s.cfg.Subs.Forget(t.Tenant.ID)
}
