package main

import (
	"context"
	"errors"
	"flag"
	"log/slog"
	"net"
	"net/http"
	"net/http/pprof"
	"os"
	"os/signal"
	"runtime"
	"syscall"
	"time"

	"github.com/keyshard/keyshard/api"
	"github.com/keyshard/keyshard/app"
)

func runServe(args []string) error {
	fs := flag.NewFlagSet("serve", flag.ExitOnError)
	var sf storageFlags
	sf.register(fs)
	var af authFlags
	af.register(fs)
	addr := fs.String("addr", "127.0.0.1:8080", "listen address")
	shutdownTimeout := fs.Duration("shutdown-timeout", 30*time.Second, "longest a stop (on SIGINT/SIGTERM, or when the listener fails) waits for requests in flight and then checkpoints the WALs closed SQLite shards kept (what is left is checkpointed after the next start); closing the shards themselves is not cut short")
	var conns api.ConnLimits
	fs.IntVar(&conns.Total, "max-conns", 8192, "most HTTP connections open at once; past it new ones get 503 and are closed (0: no cap)")
	fs.IntVar(&conns.PerAddr, "max-conns-per-client", 1024, "most HTTP connections open at once from one client address (0: no cap; behind a reverse proxy every client has its address)")
	clientHeader := fs.String("rate-limit-header", "", "header a reverse proxy in front of the server writes each client's address in (GoTrue's GOTRUE_RATE_LIMIT_HEADER), e.g. X-Forwarded-For or X-Real-IP; the per-address limits, the login pacer, sessions and audit events then use it instead of the proxy's address. Believed only on connections from --trusted-proxies; in X-Forwarded-For and Forwarded the client is the rightmost address that is not a trusted proxy (empty: the connection's address)")
	trustedProxies := fs.String("trusted-proxies", api.DefaultTrustedProxies, "addresses and CIDR ranges of the reverse proxies whose --rate-limit-header is believed, comma-separated: name a proxy that is not on this machine by its own address (e.g. 10.0.3.7), not its network's range: every address listed is skipped in X-Forwarded-For, so list none a client may reach the proxy from")
	bodyTimeout := fs.Duration("body-timeout", api.DefaultBodyTimeout, "longest time a request body may take to arrive (an upload: the longest stall); past it the request gets 408")
	outboundPrivate := fs.Bool("outbound-allow-private", false, "let webhook endpoints, tenants' own SMTP servers and identity providers be on loopback, private, link-local and metadata addresses (refused by default, checked after DNS resolution)")
	smtpURL := fs.String("smtp-url", "", "the server's SMTP server for tenants' mails: smtp://user:pass@host:port (STARTTLS when offered; ?tls=required insists, ?auth=login for AUTH LOGIN) or smtps://… (implicit TLS); empty: only tenants with their own smtp_host send mail")
	debugAddr := fs.String("debug-addr", "", "serve net/http/pprof under /debug/pprof/ on this separate address (e.g. 127.0.0.1:6060; empty: off); never expose it")
	smtpFrom := fs.String("smtp-from", "", "the sender of mails through --smtp-url (\"Name <addr>\" or addr); a tenant's smtp_admin_email and smtp_sender_name override it")
	var node app.NodeConfig
	fs.StringVar(&node.Name, "node", "", "run as this node of several sharing --catalog (PostgreSQL or MySQL): it serves the tenants it owns and forwards the others' requests to their owner (empty: the only server)")
	fs.StringVar(&node.Advertise, "advertise", "", "with --node: the base URL the other nodes reach this one at (default: http:// and --addr)")
	fs.DurationVar(&node.Lease, "lease", 10*time.Second, "with --node: the node's lease in the catalog, renewed every third of it; a node that cannot renew stops serving its tenants when it runs out, and the others may take them once it has lapsed")
	fs.BoolVar(&node.AutoFailover, "auto-failover", false, "with --node: take over the tenants of a node whose lease has lapsed (its PostgreSQL and MySQL tenants, which every node reaches; SQLite tenants wait for their node)")
	if err := parse(fs, args); err != nil {
		return err
	}
	log := slog.New(slog.NewTextHandler(os.Stderr, nil))
	// The OAuth library logs its refusals through the default logger.
	slog.SetDefault(log)
	cfg, err := af.serverConfig(sf.cfg, log)
	if err != nil {
		return err
	}
	cfg.Conns, cfg.BodyTimeout = conns, *bodyTimeout
	cfg.ClientHeader, cfg.TrustedProxies = *clientHeader, *trustedProxies
	if cfg.PublicURL == "" {
		// Mailed links and upstream callbacks must not follow a request's
		// Host header (a client would choose where a victim's link goes).
		cfg.ListenURL = listenURL(*addr)
		log.Warn("no --public-url: mailed links and identity provider callbacks point at this listen address; set --public-url to the URL users reach",
			"url", cfg.ListenURL)
	}
	cfg.Events.Webhooks.AllowPrivate = *outboundPrivate
	cfg.Mail = app.MailConfig{URL: *smtpURL, From: *smtpFrom}
	// A node advertises the address it listens at (--addr may say port
	// 0): listen before joining.
	raw, err := net.Listen("tcp", *addr)
	if err != nil {
		return err
	}
	if node.Name != "" && node.Advertise == "" {
		node.Advertise = listenURL(raw.Addr().String())
		if h, _, err := net.SplitHostPort(raw.Addr().String()); err == nil {
			if ip := net.ParseIP(h); ip != nil && (ip.IsLoopback() || ip.IsUnspecified()) {
				log.Warn("--node without --advertise: other nodes will reach this one at a loopback address, which works only on this machine; set --advertise to the URL they reach it at",
					"advertise", node.Advertise)
			}
		}
	}
	cfg.Node = node
	srv, err := app.OpenServer(context.Background(), cfg)
	if err != nil {
		_ = raw.Close()
		return err
	}
	hs := srv.HTTPServer()
	// Catch signals before announcing readiness: a SIGTERM sent as soon as
	// the "serving" line appears must drain, not kill.
	// Room for two: a second signal sent right after the first is not lost.
	sigs := make(chan os.Signal, 2)
	signal.Notify(sigs, os.Interrupt, syscall.SIGTERM)
	defer signal.Stop(sigs)
	ln := srv.Limit(raw)
	log.Info("keyshard serving", "addr", ln.Addr().String(), "data", sf.cfg.DataDir, "synchronous", sf.cfg.Synchronous, "gomaxprocs", runtime.GOMAXPROCS(0))

	if *debugAddr != "" {
		dl, err := net.Listen("tcp", *debugAddr)
		if err != nil {
			_ = srv.Close()
			return err
		}
		defer dl.Close()
		mux := http.NewServeMux()
		mux.HandleFunc("/debug/pprof/", pprof.Index)
		mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
		mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
		mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
		go func() { _ = http.Serve(dl, mux) }()
		log.Info("pprof serving", "addr", dl.Addr().String())
	}

	errc := make(chan error, 1)
	go func() { errc <- hs.Serve(ln) }()
	// The stop's deadline, set when the signal (or the listener's failure)
	// comes: the drain of requests and then the checkpoint of the WALs
	// closed shards kept share it. A failed listener's stop drains too:
	// the requests it had accepted are still running on the shards about
	// to be closed.
	select {
	case err = <-errc:
		log.Error("serving stopped: draining requests (a SIGINT or SIGTERM stops at once)", "err", err)
	case sig := <-sigs:
		log.Info("shutting down: draining requests (a second SIGINT or SIGTERM stops at once)", "signal", sig.String())
	}
	// A signal during the stop (a second one, or the first after the
	// listener failed) ends the process at once, without the drain and the
	// checkpoint: an operator's second Ctrl-C is not swallowed. Every
	// acknowledged write was synced before it was answered, and SQLite
	// recovers from an exit at any point as from a kill; what the shards
	// buffer after answering (failed logins' audit events, last-seen times)
	// is lost, as in a crash.
	stopped := make(chan struct{}) // closed once the stop is done
	go func() {
		select {
		case sig := <-sigs:
			log.Warn("signal during the stop: stopping at once, without drain or checkpoint", "signal", sig.String())
			if s, ok := sig.(syscall.Signal); ok {
				os.Exit(128 + int(s))
			}
			os.Exit(1)
		case <-stopped:
		}
	}()
	deadline := time.Now().Add(*shutdownTimeout)
	sctx, cancel := context.WithDeadline(context.Background(), deadline)
	if serr := hs.Shutdown(sctx); err == nil {
		err = serr
	}
	cancel()
	if errors.Is(err, http.ErrServerClosed) {
		err = nil
	}
	// Requests are done: close every shard (drains writers, flushes
	// buffers), then checkpoint what they kept until the deadline.
	cctx, cancel := context.WithDeadline(context.Background(), deadline)
	defer cancel()
	if cerr := srv.CloseWithin(cctx); cerr != nil && err == nil {
		err = cerr
	}
	close(stopped)
	log.Info("keyshard stopped", "err", err)
	return err
}

// listenURL is http://addr, with localhost for an unspecified host.
func listenURL(addr string) string {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return "http://" + addr
	}
	if ip := net.ParseIP(host); host == "" || (ip != nil && ip.IsUnspecified()) {
		host = "localhost"
	}
	return "http://" + net.JoinHostPort(host, port)
}
