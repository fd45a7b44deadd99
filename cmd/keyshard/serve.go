package main

import (
	"context"
	"errors"
	"flag"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/keyshard/keyshard/api"
	"github.com/keyshard/keyshard/app"
	"github.com/keyshard/keyshard/transfer"
)

func runServe(args []string) error {
	fs := flag.NewFlagSet("serve", flag.ExitOnError)
	var sf storageFlags
	sf.register(fs)
	var af authFlags
	af.register(fs)
	addr := fs.String("addr", "127.0.0.1:8080", "listen address")
	shutdownTimeout := fs.Duration("shutdown-timeout", 30*time.Second, "longest wait for requests in flight at shutdown")
	if err := parse(fs, args); err != nil {
		return err
	}
	log := slog.New(slog.NewTextHandler(os.Stderr, nil))

	a, err := openApp(&sf)
	if err != nil {
		return err
	}
	token, path, created, err := app.AdminToken(sf.cfg.DataDir, os.Getenv("KEYSHARD_ADMIN_TOKEN"))
	if err != nil {
		_ = a.Close()
		return err
	}
	logSecretSource(log, "platform admin token", "KEYSHARD_ADMIN_TOKEN", path, created)

	as, err := openAuth(sf.cfg.DataDir, &af, log)
	if err != nil {
		_ = a.Close()
		return err
	}
	defer as.Pool.Close()

	srv := &api.Server{Engine: a.Engine, AdminToken: token, Logger: log, Auth: as.Service, PublicURL: af.publicURL, Transfer: &transfer.Service{Engine: a.Engine, Backends: a.Backends}}
	hs := &http.Server{Handler: srv.Handler(), ReadHeaderTimeout: 10 * time.Second, IdleTimeout: 120 * time.Second}
	// Catch signals before announcing readiness: a SIGTERM sent as soon as
	// the "serving" line appears must drain, not kill.
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	ln, err := net.Listen("tcp", *addr)
	if err != nil {
		_ = a.Close()
		return err
	}
	log.Info("keyshard serving", "addr", ln.Addr().String(), "data", sf.cfg.DataDir, "synchronous", sf.cfg.Synchronous)

	errc := make(chan error, 1)
	go func() { errc <- hs.Serve(ln) }()
	select {
	case err = <-errc:
	case <-ctx.Done():
		log.Info("shutting down: draining requests")
		sctx, cancel := context.WithTimeout(context.Background(), *shutdownTimeout)
		err = hs.Shutdown(sctx)
		cancel()
	}
	if errors.Is(err, http.ErrServerClosed) {
		err = nil
	}
	// Requests are done: close every shard (drains writers, flushes buffers).
	if cerr := a.Close(); cerr != nil && err == nil {
		err = cerr
	}
	log.Info("keyshard stopped", "err", err)
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
