// Package mail sends a tenant's mails over SMTP from the outbox: a mail
// is an outbox row of topic "mail", written in the transaction of the
// change that needs it (a token it carries), and Sink sends it from the
// outbox job, outside the shard's writer, with the outbox's retries.
//
// Composing and sending (MIME, encodings, STARTTLS or implicit TLS, AUTH
// PLAIN/LOGIN) is github.com/wneessen/go-mail: a maintained library with
// its own SMTP client, where net/smtp is frozen and has no implicit TLS
// or context support.
package mail

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/url"
	"strconv"
	"time"

	gomail "github.com/wneessen/go-mail"

	"github.com/keyshard/keyshard/engine"
	"github.com/keyshard/keyshard/event"
	"github.com/keyshard/keyshard/internal/netguard"
)

// Topic is the outbox topic of mails.
const Topic = "mail"

// Config is an SMTP server to send through.
type Config struct {
	// URL is smtp://user:pass@host:port (STARTTLS when the server offers
	// it; port 587 by default) or smtps://… (implicit TLS, port 465);
	// ?auth=login picks AUTH LOGIN over PLAIN; ?tls=required refuses a
	// server without STARTTLS.
	URL string
	// From is the sender address ("Name <addr>" or "addr").
	From string
	// Timeout bounds one send (default 30 s).
	Timeout time.Duration
	// Guard refuses to connect to a loopback, private or link-local
	// address (a tenant's own server, unless serve
	// --outbound-allow-private); the operator's server is trusted.
	Guard bool
	// RequireTLS refuses a server without STARTTLS (a tenant's own server
	// on a public address: a stripped STARTTLS would expose the links).
	RequireTLS bool
	// TLS is the client's TLS configuration (nil: the system's roots;
	// tests trust their own certificate).
	TLS *tls.Config
}

// Message is one mail.
type Message struct {
	To      string `json:"to"`
	Subject string `json:"subject"`
	Text    string `json:"text"`
	HTML    string `json:"html,omitempty"`
	From    string `json:"from,omitempty"` // overrides the sender's From
	// Token, when set, is the stored hash of the one-time token the mail
	// carries (one_time_tokens.token_hash): a mail whose token no longer
	// exists or has expired is dropped, not sent.
	Token string `json:"token,omitempty"`
}

// Sender sends mails through one SMTP server. Safe for concurrent use.
type Sender struct {
	opts []gomail.Option
	host string
	from string
}

// New parses cfg.
func New(cfg Config) (*Sender, error) {
	u, err := url.Parse(cfg.URL)
	if err != nil || (u.Scheme != "smtp" && u.Scheme != "smtps") || u.Hostname() == "" {
		return nil, fmt.Errorf("mail: the SMTP URL must be smtp://[user:pass@]host[:port] or smtps://…")
	}
	if cfg.From == "" {
		return nil, errors.New("mail: a sender address (From) is required")
	}
	timeout := cfg.Timeout
	if timeout <= 0 {
		timeout = 30 * time.Second
	}
	port := 587
	if p := u.Port(); p != "" {
		if port, err = strconv.Atoi(p); err != nil {
			return nil, fmt.Errorf("mail: bad port %q", p)
		}
	} else if u.Scheme == "smtps" {
		port = 465
	}
	tlsCfg := &tls.Config{MinVersion: tls.VersionTLS12}
	if cfg.TLS != nil {
		tlsCfg = cfg.TLS.Clone()
	}
	if tlsCfg.ServerName == "" {
		tlsCfg.ServerName = u.Hostname()
	}
	// Our own dialer (the address guard, when asked); go-mail does not
	// wrap a custom dialer's connection for implicit TLS, so smtps dials
	// TLS itself.
	d := &net.Dialer{Timeout: 10 * time.Second}
	if cfg.Guard {
		d.Control = netguard.Control
	}
	opts := []gomail.Option{gomail.WithTimeout(timeout), gomail.WithPort(port), gomail.WithTLSConfig(tlsCfg)}
	switch {
	case u.Scheme == "smtps":
		td := &tls.Dialer{NetDialer: d, Config: tlsCfg}
		opts = append(opts, gomail.WithDialContextFunc(td.DialContext), gomail.WithTLSPolicy(gomail.NoTLS))
	case u.Query().Get("tls") == "required" || cfg.RequireTLS:
		opts = append(opts, gomail.WithDialContextFunc(d.DialContext), gomail.WithTLSPolicy(gomail.TLSMandatory))
	default:
		opts = append(opts, gomail.WithDialContextFunc(d.DialContext), gomail.WithTLSPolicy(gomail.TLSOpportunistic))
	}
	if u.User != nil {
		pass, _ := u.User.Password()
		auth := gomail.SMTPAuthPlain
		if u.Query().Get("auth") == "login" {
			auth = gomail.SMTPAuthLogin
		}
		opts = append(opts, gomail.WithSMTPAuth(auth), gomail.WithUsername(u.User.Username()), gomail.WithPassword(pass))
	}
	return &Sender{opts: opts, host: u.Hostname(), from: cfg.From}, nil
}

// Send sends one mail: a text body, and an HTML alternative when given.
func (s *Sender) Send(ctx context.Context, m Message) error {
	msg := gomail.NewMsg()
	from := s.from
	if m.From != "" {
		from = m.From
	}
	if err := msg.From(from); err != nil {
		return fmt.Errorf("mail: sender %q: %w", from, err)
	}
	if err := msg.To(m.To); err != nil {
		return &event.Drop{Err: fmt.Errorf("mail: recipient: %w", err)}
	}
	msg.Subject(m.Subject)
	msg.SetBodyString(gomail.TypeTextPlain, m.Text)
	if m.HTML != "" {
		msg.AddAlternativeString(gomail.TypeTextHTML, m.HTML)
	}
	c, err := gomail.NewClient(s.host, s.opts...)
	if err != nil {
		return err
	}
	return c.DialAndSendWithContext(ctx, msg)
}

// Sink sends the outbox's mail rows: an event.Sink for Topic. The event's
// data is a Message.
type Sink struct {
	// Sender is the server's SMTP server (nil: none).
	Sender *Sender
	// Tenant returns a tenant's own server, nil for the server's (nil
	// func: every tenant uses the server's).
	Tenant func(ctx context.Context, t *engine.TenantShard) (*Sender, error)
}

// ErrNoServer: neither the server nor the tenant has an SMTP server; the
// mail waits in the outbox, retried, until one is set.
var ErrNoServer = errors.New("mail: no SMTP server: set serve --smtp-url or the tenant's smtp_host")

var _ event.Sink = Sink{}

// Deliver implements event.Sink.
func (s Sink) Deliver(ctx context.Context, t *engine.TenantShard, m event.Message) error {
	var env struct {
		Data Message `json:"data"`
	}
	if err := json.Unmarshal(m.Payload, &env); err != nil || env.Data.To == "" {
		return &event.Drop{Err: fmt.Errorf("mail: outbox row %d is not a mail", m.ID)}
	}
	if env.Data.Token != "" {
		live, err := tokenLive(ctx, t, env.Data.Token)
		if err != nil {
			return err
		}
		if !live {
			return &event.Drop{Err: fmt.Errorf("mail: outbox row %d carries a token replaced, used or expired since", m.ID)}
		}
	}
	sender := s.Sender
	if s.Tenant != nil {
		ts, err := s.Tenant(ctx, t)
		if err != nil {
			return err
		}
		if ts != nil {
			sender = ts
		}
	}
	if sender == nil {
		return ErrNoServer
	}
	if sender == s.Sender {
		// Through the operator's server a tenant's sender would let any
		// tenant mail as anyone (its templates, any address): the
		// operator's From it is.
		env.Data.From = ""
	}
	return sender.Send(ctx, env.Data)
}

// tokenLive reports whether the one-time token of a mail can still be
// used: a newer one of its kind replaces it, using it deletes it.
func tokenLive(ctx context.Context, t *engine.TenantShard, hash string) (bool, error) {
	live := false
	err := t.Read(ctx, func(q engine.Querier) error {
		var exp int64
		err := q.QueryRow(`SELECT expires_at FROM one_time_tokens WHERE token_hash = ?`, hash).Scan(&exp)
		if errors.Is(err, engine.ErrNoRows) {
			return nil
		}
		live = err == nil && exp > time.Now().UnixMicro()
		return err
	})
	return live, err
}
