package bench

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/pprof"
	"os"
	"time"

	"github.com/keyshard/keyshard/api"
	"github.com/keyshard/keyshard/app"
	"github.com/keyshard/keyshard/auth"
	"github.com/keyshard/keyshard/auth/hash"
	"github.com/keyshard/keyshard/auth/token"
)

// ServerConfig configures a server started in this process.
type ServerConfig struct {
	// Storage is the engine's configuration; an empty DataDir is a new
	// temporary directory removed by Close.
	Storage app.Config
	// Hash configures the password hashing pool (zero: OWASP defaults,
	// one worker per CPU, 1 s budget).
	Hash hash.Config
	// Pprof serves net/http/pprof under /debug/pprof/ (loopback only).
	Pprof bool
	// Logger receives the server's logs; nil discards them.
	Logger *slog.Logger
}

// LocalServer is a Keyshard server on a loopback port of this process,
// assembled as `keyshard serve` assembles it.
type LocalServer struct {
	URL        string
	AdminToken string
	App        *app.App
	Pool       *hash.Pool

	hs      *http.Server
	served  chan error
	tempDir string
}

// StartServer starts a server on 127.0.0.1 on a free port.
func StartServer(ctx context.Context, cfg ServerConfig) (*LocalServer, error) {
	s := &LocalServer{served: make(chan error, 1)}
	if cfg.Storage.DataDir == "" {
		dir, err := os.MkdirTemp("", "keyshard-bench-")
		if err != nil {
			return nil, err
		}
		s.tempDir = dir
		cfg.Storage.DataDir = dir
	}
	fail := func(err error) (*LocalServer, error) {
		_ = s.Close()
		return nil, err
	}
	a, err := app.Open(ctx, cfg.Storage)
	if err != nil {
		return fail(err)
	}
	s.App = a
	pool, err := hash.NewPool(cfg.Hash)
	if err != nil {
		return fail(err)
	}
	s.Pool = pool
	master := make([]byte, token.MasterKeySize)
	_, _ = rand.Read(master)
	keys, err := token.NewKeys(token.KeysConfig{MasterKey: master, TokenTTL: auth.DefaultAccessTokenTTL})
	if err != nil {
		return fail(err)
	}
	adm := make([]byte, 24)
	_, _ = rand.Read(adm)
	s.AdminToken = hex.EncodeToString(adm)
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	srv := &api.Server{Engine: a.Engine, AdminToken: s.AdminToken, Logger: log, Auth: auth.New(pool, keys, master, auth.Config{})}
	var h http.Handler = srv.Handler()
	if cfg.Pprof {
		mux := http.NewServeMux()
		mux.HandleFunc("/debug/pprof/", pprof.Index)
		mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
		mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
		mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
		mux.Handle("/", h)
		h = mux
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return fail(err)
	}
	s.URL = "http://" + ln.Addr().String()
	s.hs = &http.Server{Handler: h, ReadHeaderTimeout: 10 * time.Second, IdleTimeout: 120 * time.Second}
	go func() { s.served <- s.hs.Serve(ln) }()
	return s, nil
}

// Close stops the server (waiting up to 10 s for requests in flight),
// closes the engine and the pool, and removes a temporary data directory.
// Safe to call twice.
func (s *LocalServer) Close() error {
	var errs []error
	if s.hs != nil {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		err := s.hs.Shutdown(ctx)
		cancel()
		if err != nil {
			errs = append(errs, err)
		}
		if err := <-s.served; err != nil && !errors.Is(err, http.ErrServerClosed) {
			errs = append(errs, err)
		}
		s.hs = nil
	}
	if s.Pool != nil {
		s.Pool.Close()
		s.Pool = nil
	}
	if s.App != nil {
		errs = append(errs, s.App.Close())
		s.App = nil
	}
	if s.tempDir != "" {
		errs = append(errs, os.RemoveAll(s.tempDir))
		s.tempDir = ""
	}
	return errors.Join(errs...)
}
