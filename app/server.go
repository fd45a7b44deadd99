package app

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"time"

	"github.com/keyshard/keyshard/api"
	"github.com/keyshard/keyshard/api/gotrue"
	"github.com/keyshard/keyshard/api/nodes"
	"github.com/keyshard/keyshard/api/oidc"
	"github.com/keyshard/keyshard/api/platform"
	"github.com/keyshard/keyshard/auth"
	"github.com/keyshard/keyshard/auth/hash"
	"github.com/keyshard/keyshard/auth/token"
	"github.com/keyshard/keyshard/cluster"
	"github.com/keyshard/keyshard/engine"
	"github.com/keyshard/keyshard/event"
	"github.com/keyshard/keyshard/mail"
	"github.com/keyshard/keyshard/transfer"
	"github.com/keyshard/keyshard/upstream"
	"github.com/keyshard/keyshard/webhook"
)

// ServerConfig is everything `keyshard serve` runs with. Zero fields take
// defaults.
type ServerConfig struct {
	Storage Config
	// Hash configures the password hashing pool.
	Hash hash.Config

	// MasterKey encrypts the tenants' private signing keys (32 bytes).
	// Empty: MasterKeyText, else the file master-key in the data directory,
	// generated on first start.
	MasterKey []byte
	// MasterKeyText is a master key in hex or base64 (KEYSHARD_MASTER_KEY).
	MasterKeyText string
	// AdminToken is the platform admin token (KEYSHARD_ADMIN_TOKEN). Empty:
	// the file admin-token in the data directory, generated on first start.
	AdminToken string

	// AccessTokenTTL is the access token lifetime (default 1 h).
	AccessTokenTTL time.Duration
	// PublicURL is the external base URL in tokens' iss (default: from
	// each request's Host).
	PublicURL string
	// ListenURL is where this server is reached when PublicURL is not set
	// (serve: http://its --addr): mailed links and upstream callbacks use
	// it, never a request's Host header, which a client chooses. Empty
	// too (tests): the request's host.
	ListenURL string
	// Throttle limits failed logins; nil: auth.DefaultThrottle.
	Throttle *auth.ThrottleConfig
	// Signups limits signups per client address and per tenant (zero: no
	// limit).
	Signups auth.SignupLimits
	// Now is the auth clock (tests move it); default time.Now.
	Now func() time.Time

	// TransferTempDir holds export and import staging files (default the
	// system's temporary directory); FenceWait bounds a write's wait behind
	// a move's fence (default shard.DefaultFenceWait).
	TransferTempDir string
	FenceWait       time.Duration

	// Events say which events go to the outbox and who delivers them.
	Events EventsConfig
	// Mail is the server's SMTP server for tenants' mails.
	Mail MailConfig

	// Conns caps the connections Listen's listener keeps open.
	Conns api.ConnLimits
	// BodyTimeout bounds the time a request's body may take to arrive
	// (api.DefaultBodyTimeout when 0).
	BodyTimeout time.Duration

	// ClientHeader, when set, is the header a reverse proxy in front of
	// the server writes the client's address in (serve --rate-limit-header,
	// GoTrue's GOTRUE_RATE_LIMIT_HEADER), believed on connections from
	// TrustedProxies (comma-separated addresses and ranges, required with
	// it; serve's default is api.DefaultTrustedProxies). See api.ClientAddr.
	ClientHeader, TrustedProxies string

	// Node makes this server one of several sharing the catalog; zero:
	// the only one.
	Node NodeConfig

	// Logger receives the server's logs; nil discards them.
	Logger *slog.Logger
}

// NodeConfig is this server as one of several nodes sharing a catalog on
// PostgreSQL or MySQL (serve --node, --advertise, --lease, --auto-failover).
type NodeConfig struct {
	Name, Advertise string
	Lease           time.Duration
	AutoFailover    bool
}

// EventsConfig configures the outbox: which events each topic's sink
// subscribes to, the sinks, and the background workers that deliver.
type EventsConfig struct {
	// Subscriptions choose the events written to the outbox (nil: none;
	// every event still has its audit row).
	Subscriptions event.Subscriptions
	// Sinks deliver the outbox's topics.
	Sinks map[string]event.Sink
	// Workers, Interval: engine.Worker's (defaults 4 and 500 ms).
	Workers  int
	Interval time.Duration
	// Backoff and Now: the Outbox job's and the worker's (default:
	// exponential with jitter, and ServerConfig.Now).
	Backoff func(attempts int) time.Duration
	Now     func() time.Time
	// Webhooks configures the webhook sink (its clock is Now).
	Webhooks WebhooksConfig
}

// MailConfig is the server's SMTP server (serve --smtp-url, --smtp-from).
// A tenant with its own smtp_host sends through that instead, reached only
// at public addresses unless Events.Webhooks.AllowPrivate.
type MailConfig struct {
	URL, From string
}

// WebhooksConfig configures webhook delivery.
type WebhooksConfig struct {
	// AllowPrivate lets endpoints and deliveries reach loopback, private,
	// link-local and metadata addresses (serve --outbound-allow-private).
	AllowPrivate bool
	// Timeout of one delivery (default 10 s); MaxConnsPerHost to one
	// receiver (default 8).
	Timeout         time.Duration
	MaxConnsPerHost int
	// Schedule overrides the retry schedule (tests).
	Schedule []time.Duration
}

// Server is everything `keyshard serve` runs, assembled once: the storage
// engine, the password hashing pool, the signing keys, the auth flows,
// export/import/move, and the HTTP API with every protocol registered.
// `serve`, the tests and the load generator's in-process mode all build it
// here.
type Server struct {
	*App
	AdminToken string
	Pool       *hash.Pool
	Keys       *token.Keys
	Auth       *auth.Service
	Transfer   *transfer.Service
	API        *api.Server
	// Work delivers every tenant's outbox in the background.
	Work *engine.Worker
	// Webhooks manages the tenants' webhook endpoints.
	Webhooks *webhook.Service

	// Node is this server as one of several nodes; nil when alone.
	Node *cluster.Node

	handler http.Handler
	conns   api.ConnLimits
	log     *slog.Logger
}

// OpenServer opens the storage engine and builds the server on it. Close
// it when done.
func OpenServer(ctx context.Context, cfg ServerConfig) (s *Server, err error) {
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	if cfg.Storage.DataDir == "" {
		cfg.Storage.DataDir = "data"
	}
	if cfg.Node.Name != "" {
		if cfg.Storage.CatalogDSN == "" {
			return nil, engine.Invalidf("a node (--node) shares its catalog with the others: give --catalog postgres://… or mysql://…")
		}
		cfg.Storage.Fenced = true
	}
	var clientAddr *api.ClientAddr
	if cfg.ClientHeader != "" {
		if clientAddr, err = api.NewClientAddr(cfg.ClientHeader, cfg.TrustedProxies); err != nil {
			return nil, engine.Invalidf("client address header: %v", err)
		}
	}
	cfg.Storage.ScanKeptWALs = true
	cfg.Storage.Node = cfg.Node.Name
	a, err := Open(ctx, cfg.Storage)
	if err != nil {
		return nil, err
	}
	s = &Server{App: a}
	defer func() {
		if err != nil {
			_ = s.Close()
			s = nil
		}
	}()
	tok, path, created, err := AdminToken(cfg.Storage.DataDir, cfg.AdminToken)
	if err != nil {
		return nil, err
	}
	s.AdminToken = tok
	logSecretSource(log, "platform admin token", "KEYSHARD_ADMIN_TOKEN", path, created)
	master := cfg.MasterKey
	if len(master) == 0 {
		key, path, created, err := token.LoadMasterKey(cfg.Storage.DataDir, cfg.MasterKeyText)
		if err != nil {
			return nil, err
		}
		master = key
		logSecretSource(log, "master key", "KEYSHARD_MASTER_KEY", path, created)
	}
	if s.Pool, err = hash.NewPool(cfg.Hash); err != nil {
		return nil, fmt.Errorf("hash pool: %w", err)
	}
	st := s.Pool.Stats()
	p := s.Pool.Params()
	log.Info("password hashing", "params", fmt.Sprintf("m=%d,t=%d,p=%d", p.MemoryKiB, p.Time, p.Threads),
		"workers", st.Workers, "hash_time", st.HashTime.Round(time.Millisecond), "budget", cfg.Hash.Budget,
		"background", cfg.Hash.Background)
	ttl := cfg.AccessTokenTTL
	if ttl <= 0 {
		ttl = auth.DefaultAccessTokenTTL
	}
	if s.Keys, err = token.NewKeys(token.KeysConfig{MasterKey: master, TokenTTL: ttl, Now: cfg.Now}); err != nil {
		return nil, err
	}
	var throttle *auth.Throttle
	if cfg.Throttle != nil {
		if throttle, err = auth.NewThrottle(*cfg.Throttle, cfg.Now); err != nil {
			return nil, err
		}
	}
	signups, err := auth.NewSignupLimiter(cfg.Signups, cfg.Now)
	if err != nil {
		return nil, err
	}
	now := cfg.Events.Now
	if now == nil {
		now = cfg.Now // the clock the flows stamp events with
	}
	hooks := &webhook.Subscriptions{Now: now}
	events, err := event.NewRecorder(event.All{cfg.Events.Subscriptions, hooks}, a.Catalog)
	if err != nil {
		return nil, err
	}
	s.Webhooks = &webhook.Service{Events: events, Subs: hooks, Now: now, AllowPrivate: cfg.Events.Webhooks.AllowPrivate}
	sinks := map[string]event.Sink{"webhook": webhook.NewSink(webhook.SinkConfig{Events: events, Subs: hooks, Now: now,
		AllowPrivate: cfg.Events.Webhooks.AllowPrivate, Timeout: cfg.Events.Webhooks.Timeout,
		MaxConnsPerHost: cfg.Events.Webhooks.MaxConnsPerHost, Schedule: cfg.Events.Webhooks.Schedule})}
	if sinks[auth.MailTopic], err = s.mailSink(cfg); err != nil {
		return nil, err
	}
	for topic, sink := range cfg.Events.Sinks {
		sinks[topic] = sink
	}
	s.Auth = auth.New(s.Pool, s.Keys, master, auth.Config{AccessTokenTTL: ttl, LoginThrottle: throttle, Now: cfg.Now, Events: events, Signups: signups})
	if cfg.Node.Name != "" {
		s.Node, err = cluster.Start(ctx, cluster.Config{Name: cfg.Node.Name, Address: cfg.Node.Advertise, Lease: cfg.Node.Lease,
			AutoFailover: cfg.Node.AutoFailover, Catalog: a.Catalog, Storages: a.Engine.Backends,
			OpenShards: func() int { return a.Cache.Stats().Open },
			EvictStale: a.Cache.EvictStale, Log: log,
			HasLocal: func(p engine.Placement) bool {
				path, err := a.SQLite.Path(p)
				if err != nil {
					return false
				}
				_, err = os.Stat(path)
				return err == nil
			}})
		if err != nil {
			return nil, err
		}
		a.Engine.Owner = s.Node
		node := s.Node
		a.Catalog.OnReload(func() { node.Sweep(a.Cache.Open()) })
		if err := a.Catalog.NotifyError(); err != nil {
			log.Warn("catalog changes are not notified (no trigger on the catalog table): nodes see them by polling, within a second", "err", err)
		}
		// The lease ends once the shards have flushed: the others may take
		// this node's tenants then, without waiting for it to lapse.
		a.AfterShardsClosed = s.Node.Close
		log.Info("node of a shared catalog", "node", cfg.Node.Name, "advertise", cfg.Node.Advertise, "lease", s.Node.Lease(),
			"auto_failover", cfg.Node.AutoFailover)
	}
	s.Transfer = &transfer.Service{Engine: a.Engine, Backends: a.Backends, TempDir: cfg.TransferTempDir, FenceWait: cfg.FenceWait}
	s.API = api.NewServer(a.Engine, log)
	s.API.BodyTimeout = cfg.BodyTimeout
	s.API.Origins = func(ctx context.Context, ts *engine.TenantShard, origin string) (bool, bool, error) {
		st, err := s.Auth.CachedSettings(ctx, auth.Tenant{ID: ts.Tenant.ID, Shard: ts})
		if err != nil {
			return false, false, err
		}
		allowed, credentials := st.AllowsOrigin(origin)
		return allowed, credentials, nil
	}
	s.conns, s.log = cfg.Conns, log
	pcfg := platform.Config{AdminToken: s.AdminToken, Auth: s.Auth, Transfer: s.Transfer}
	var fw *nodes.Forwarder
	if s.Node != nil {
		m := hmac.New(sha256.New, master)
		m.Write([]byte("keyshard node forwarding"))
		fw = &nodes.Forwarder{Node: s.Node, Engine: a.Engine, Key: m.Sum(nil), Log: log}
		pcfg.Node = s.Node
		pcfg.Remote = func(ctx context.Context, name string) (transfer.RemoteNode, error) {
			peer, ok := s.Node.Peer(ctx, name)
			if !ok || peer.LeaseLeft <= 0 {
				return nil, engine.Invalidf("node %s is not registered or its lease has lapsed", name)
			}
			return fw.Remote(name, peer.Address), nil
		}
		// Copies staged by moves that a restart cut off are of no use.
		incoming := filepath.Join(a.SQLite.DataDir, "incoming")
		_ = os.RemoveAll(incoming)
		fw.RegisterInternal(s.API, &transfer.Incoming{Service: s.Transfer, Dir: incoming, Place: a.SQLite.Path, Evict: a.Cache.Evict})
	}
	platform.Register(s.API, pcfg)
	gt := gotrue.Register(s.API, s.Auth, gotrue.Options{PublicURL: cfg.PublicURL, ListenURL: cfg.ListenURL, AdminToken: s.AdminToken, Webhooks: s.Webhooks,
		Upstream: upstream.New(cfg.Events.Webhooks.AllowPrivate), AllowPrivate: cfg.Events.Webhooks.AllowPrivate})
	if _, err := oidc.Register(s.API, s.Auth, gt, oidc.Options{Secret: master}); err != nil {
		return nil, fmt.Errorf("oauth provider: %w", err)
	}
	s.Work = &engine.Worker{Engine: a.Engine, Marks: a.Catalog, Workers: cfg.Events.Workers, Interval: cfg.Events.Interval, Now: now,
		Jobs: []engine.Job{&event.Outbox{Sinks: sinks, Backoff: cfg.Events.Backoff, Now: now}},
		OnError: func(tenantID string, err error) {
			log.Warn("background work failed; retried later", "tenant_id", tenantID, "err", err)
		}}
	s.Work.Start()
	s.handler = s.API.Handler()
	if fw != nil {
		s.handler = fw.Wrap(s.handler)
	}
	if clientAddr != nil {
		// Outermost: the forwarder passes on the client it resolved.
		s.handler = clientAddr.Wrap(s.handler)
		log.Info("client addresses from a proxy's header", "header", clientAddr.Header(), "trusted_proxies", cfg.TrustedProxies)
	}
	return s, nil
}

// mailSink sends the outbox's mails: through the tenant's own SMTP server
// when its auth config names one, else the server's.
func (s *Server) mailSink(cfg ServerConfig) (mail.Sink, error) {
	var sink mail.Sink
	if cfg.Mail.URL != "" {
		from := cfg.Mail.From
		if from == "" {
			from = "noreply@localhost"
		}
		sender, err := mail.New(mail.Config{URL: cfg.Mail.URL, From: from})
		if err != nil {
			return sink, err
		}
		sink.Sender = sender
	}
	allowPrivate := cfg.Events.Webhooks.AllowPrivate
	sink.Tenant = func(ctx context.Context, ts *engine.TenantShard) (*mail.Sender, error) {
		st, err := s.Auth.CachedSettings(ctx, auth.Tenant{ID: ts.Tenant.ID, Shard: ts})
		if err != nil || st.SMTPHost == "" {
			return nil, err
		}
		port := st.SMTPPort
		if port == 0 {
			port = 587
		}
		u := url.URL{Scheme: "smtp", Host: net.JoinHostPort(st.SMTPHost, strconv.Itoa(port))}
		if port == 465 {
			u.Scheme = "smtps"
		}
		if st.SMTPUser != "" {
			pass, err := s.Auth.SMTPPassword(auth.Tenant{ID: ts.Tenant.ID, Shard: ts}, st)
			if err != nil {
				return nil, err
			}
			u.User = url.UserPassword(st.SMTPUser, pass)
		}
		from := cfg.Mail.From
		if st.SMTPAdminEmail != "" {
			from = st.SMTPAdminEmail
		}
		if from == "" {
			from = "noreply@localhost"
		}
		return mail.New(mail.Config{URL: u.String(), From: from, Guard: !allowPrivate, RequireTLS: !allowPrivate})
	}
	return sink, nil
}

// Listen listens on addr with the configured connection caps, and logs
// them with the process's limit of open files, which they must fit in.
func (s *Server) Listen(addr string) (net.Listener, error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, err
	}
	return s.Limit(ln), nil
}

// Limit puts ln (listening already) under the configured connection caps,
// as Listen does.
func (s *Server) Limit(ln net.Listener) net.Listener {
	soft, hard, ok := openFilesLimit()
	if ok {
		s.log.Info("connection limits", "max_conns", s.conns.Total, "max_conns_per_client", s.conns.PerAddr,
			"open_files_limit", soft, "open_files_hard_limit", hard)
		if s.conns.Total == 0 || uint64(s.conns.Total) > soft/2 {
			s.log.Warn("the connection cap leaves less than half the open files limit to shards (9 descriptors each): raise ulimit -n or lower --max-conns",
				"max_conns", s.conns.Total, "open_files_limit", soft)
		}
	}
	return api.LimitListener(ln, s.conns, s.log)
}

// Handler returns the server's HTTP handler.
func (s *Server) Handler() http.Handler { return s.handler }

// HTTPServer returns an http.Server for the handler with the timeouts
// `serve` uses.
func (s *Server) HTTPServer() *http.Server {
	return &http.Server{Handler: s.Handler(), ReadHeaderTimeout: 10 * time.Second, IdleTimeout: 120 * time.Second}
}

// Close stops the background workers and the hash pool, then closes the
// storage engine (every shard's writer drains, buffers are flushed). Call
// it after the HTTP server has stopped. Safe to call twice.
func (s *Server) Close() error {
	ctx, cancel := context.WithTimeout(context.Background(), StopSweepBound)
	defer cancel()
	return s.CloseWithin(ctx)
}

// CloseWithin is Close whose checkpoint of the WALs closed shards kept
// stops when ctx ends (App.CloseWithin).
func (s *Server) CloseWithin(ctx context.Context) error {
	if s.Work != nil {
		_ = s.Work.Close() // before the shards close: a turn pins one
		s.Work = nil
	}
	if s.Pool != nil {
		s.Pool.Close()
		s.Pool = nil
	}

	var err error
	if s.App != nil {
		err = s.App.CloseWithin(ctx)
	}
	return err
}

// logSecretSource says where a secret came from (never the secret itself):
// a file written now, a file read, or an environment variable.
func logSecretSource(log *slog.Logger, what, env, path string, created bool) {
	switch {
	case created:
		log.Info("generated the "+what, "file", path)
	case path != "":
		log.Info(what+" read from file", "file", path)
	default:
		log.Info(what + " taken from " + env)
	}
}
