package bench

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"net/http"
	"net/http/pprof"
	"os"
	"time"

	"github.com/keyshard/keyshard/app"
	"github.com/keyshard/keyshard/auth/token"
)

// ServerConfig configures a server started in this process.
type ServerConfig struct {
	// Server is what `keyshard serve` would run with. An empty data
	// directory is a new temporary one removed by Close; an empty master
	// key or admin token is a random one.
	Server app.ServerConfig
	// Pprof serves net/http/pprof under /debug/pprof/ (loopback only).
	Pprof bool
}

// LocalServer is a Keyshard server on a loopback port of this process,
// built by app.OpenServer as `keyshard serve` builds it.
type LocalServer struct {
	URL         string
	*app.Server // AdminToken is the platform admin token

	hs      *http.Server
	served  chan error
	tempDir string
}

// StartServer starts a server on 127.0.0.1 on a free port.
func StartServer(ctx context.Context, cfg ServerConfig) (*LocalServer, error) {
	s := &LocalServer{served: make(chan error, 1)}
	sc := cfg.Server
	if sc.Storage.DataDir == "" {
		dir, err := os.MkdirTemp("", "keyshard-bench-")
		if err != nil {
			return nil, err
		}
		s.tempDir = dir
		sc.Storage.DataDir = dir
	}
	if len(sc.MasterKey) == 0 && sc.MasterKeyText == "" {
		sc.MasterKey = make([]byte, token.MasterKeySize)
		_, _ = rand.Read(sc.MasterKey)
	}
	if sc.AdminToken == "" {
		adm := make([]byte, 24)
		_, _ = rand.Read(adm)
		sc.AdminToken = hex.EncodeToString(adm)
	}
	fail := func(err error) (*LocalServer, error) {
		_ = s.Close()
		return nil, err
	}
	srv, err := app.OpenServer(ctx, sc)
	if err != nil {
		return fail(err)
	}
	s.Server = srv
	h := srv.Handler()
	if cfg.Pprof {
		mux := http.NewServeMux()
		mux.HandleFunc("/debug/pprof/", pprof.Index)
		mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
		mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
		mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
		mux.Handle("/", h)
		h = mux
	}
	ln, err := srv.Listen("127.0.0.1:0")
	if err != nil {
		return fail(err)
	}
	s.URL = "http://" + ln.Addr().String()
	s.hs = srv.HTTPServer()
	s.hs.Handler = h
	go func() { s.served <- s.hs.Serve(ln) }()
	return s, nil
}

// Close stops the server (waiting up to 10 s for requests in flight),
// closes what app.OpenServer opened, and removes a temporary data
// directory. Safe to call twice.
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
	if s.Server != nil {
		errs = append(errs, s.Server.Close())
		s.Server = nil
	}
	if s.tempDir != "" {
		errs = append(errs, os.RemoveAll(s.tempDir))
		s.tempDir = ""
	}
	return errors.Join(errs...)
}
