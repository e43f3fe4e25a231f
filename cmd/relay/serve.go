package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/relaymw/relay/cmd/relay/internal/config"
	"github.com/relaymw/relay/cmd/relay/internal/serve"
	"github.com/relaymw/relay/tenant"
	"github.com/relaymw/relay/tlsconf"
)

// setFlags collects repeated --set key=value flags.
type setFlags []string

func (s *setFlags) String() string     { return strings.Join(*s, ",") }
func (s *setFlags) Set(v string) error { *s = append(*s, v); return nil }

// loadConfig parses the flags every config-reading command shares and
// loads the configuration (file < environment < flags).
func loadConfig(name string, args []string, stderr io.Writer) (*config.Config, int) {
	fs := flag.NewFlagSet("relay "+name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	path := fs.String("config", os.Getenv("RELAY_CONFIG"), "configuration file (YAML); also RELAY_CONFIG")
	var sets setFlags
	fs.Var(&sets, "set", "override one key, e.g. --set ingress.listen=127.0.0.1:8081 (repeatable)")
	if code, ok := parseArgs(fs, args, stderr); !ok {
		return nil, code
	}
	cfg, err := config.Load(*path, os.Getenv, sets)
	if err != nil {
		fmt.Fprintf(stderr, "relay %s: %v\n", name, err)
		return nil, 1
	}
	return cfg, -1
}

func exists(path string) bool {
	_, err := os.Stat(path)
	return err == nil
}

func runCheckConfig(args []string, stdout, stderr io.Writer) int {
	cfg, code := loadConfig("check-config", args, stderr)
	if cfg == nil {
		return code
	}
	errs := cfg.Validate()
	if cert, key := cfg.Ingress.TLS.CertFile, cfg.Ingress.TLS.KeyFile; cert != "" && key != "" && exists(cert) && exists(key) {
		// serve refuses a pair that does not load: say so here too.
		if srv, err := tlsconf.NewServer(cert, key); err != nil {
			errs = append(errs, fmt.Errorf("ingress.tls: %w", err))
		} else if at := srv.NotAfter(); time.Now().After(at) {
			fmt.Fprintf(stderr, "warning: ingress.tls: %s expired at %s (serve serves it all the same: only a peer that does not verify it gets through)\n", cert, at.UTC().Format(time.RFC3339))
		}
	}
	tenants, err := tenant.LoadFile(cfg.Tenants.File)
	if err != nil {
		errs = append(errs, tenantErrors(err)...)
	}
	for _, t := range tenants {
		if f := t.Instance.CAFile; f != "" {
			if _, err := os.Stat(f); err != nil {
				fmt.Fprintf(stderr, "warning: tenant %s: instance.ca_file: %v (delivery to it waits for the file)\n", t.ID, err)
			}
		}
	}
	if cert, key := cfg.Delivery.ClientCertFile, cfg.Delivery.ClientKeyFile; cfg.Delivery.On() && cert != "" && key != "" {
		// Delivery waits for a pair that is missing or does not load (an
		// expired certificate, an encrypted key): say so, as serve does.
		if _, err := tlsconf.NewClient(cert, key); errors.Is(err, os.ErrNotExist) {
			fmt.Fprintf(stderr, "warning: delivery: %v (delivery waits for the file; relay certs init makes one)\n", err)
		} else if err != nil {
			fmt.Fprintf(stderr, "warning: delivery: %v (delivery waits until the files load)\n", err)
		}
	}
	for _, w := range cfg.Warnings() {
		fmt.Fprintf(stderr, "warning: %s\n", w)
	}
	for _, err := range errs {
		fmt.Fprintln(stderr, err)
	}
	if len(errs) > 0 {
		return 1
	}
	fmt.Fprintln(stdout, "configuration ok")
	return 0
}

// tenantErrors splits a tenants file error into one line per problem.
func tenantErrors(err error) []error {
	var out []error
	for _, line := range strings.Split(err.Error(), "\n") {
		out = append(out, fmt.Errorf("tenants.file: %s", strings.TrimPrefix(line, tenant.ErrInvalidFile.Error()+": ")))
	}
	return out
}

func runServe(args []string, _, stderr io.Writer) int {
	cfg, code := loadConfig("serve", args, stderr)
	if cfg == nil {
		return code
	}
	if errs := cfg.Validate(); len(errs) > 0 {
		for _, err := range errs {
			fmt.Fprintln(stderr, err)
		}
		return 1
	}
	logger := newLogger(cfg, stderr)
	for _, w := range cfg.Warnings() {
		logger.Warn(w)
	}
	ctx, stop := signalContext() // a second signal ends the process at once
	defer stop()
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(hup)
	reload := make(chan struct{}, 1)
	go func() {
		for range hup {
			select {
			case reload <- struct{}{}:
			default:
			}
		}
	}()
	if err := serve.Run(ctx, cfg, serve.Options{Logger: logger, Reload: reload, Version: fullVersion()}); err != nil {
		logger.Error("relay stopped", "err", err)
		return 1
	}
	return 0
}

func newLogger(cfg *config.Config, w io.Writer) *slog.Logger {
	var level slog.Level
	_ = level.UnmarshalText([]byte(cfg.Log.Level))
	opts := &slog.HandlerOptions{Level: level}
	if cfg.Log.Format == "text" {
		return slog.New(slog.NewTextHandler(w, opts))
	}
	return slog.New(slog.NewJSONHandler(w, opts))
}
