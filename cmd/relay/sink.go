package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"os"
	"time"

	"github.com/relaymw/relay/bench"
)

const sinkUsage = `usage: relay sink --cert FILE --key FILE [--listen ADDR] [--client-ca FILE] [--secret whsec_…] [--body]

A stand-in tenant instance for trying the relay out: an HTTPS server that
prints one JSON line per delivery it receives (webhook-id, both signature
checks, the relay's client certificate), and answers 204, or 401 when a
signature does not verify.

flags:
`

func runSink(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("relay sink", flag.ContinueOnError)
	fs.SetOutput(stderr)
	listen := fs.String("listen", "127.0.0.1:9443", "address to listen on")
	cert := fs.String("cert", "", "server certificate (PEM), e.g. certs/acme.pem from relay certs init")
	key := fs.String("key", "", "server key (PEM)")
	clientCA := fs.String("client-ca", "", "require a client certificate signed by this CA (mutual TLS), e.g. certs/ca.pem")
	secret := fs.String("secret", os.Getenv("RELAY_SINK_SECRET"), "the tenant's signing secret, to verify signatures; also RELAY_SINK_SECRET")
	body := fs.Bool("body", false, "print each delivery's body and its signature headers")
	fs.Usage = func() { fmt.Fprint(fs.Output(), sinkUsage); fs.PrintDefaults() }
	if code, ok := parseArgs(fs, args, stderr); !ok {
		return code
	}
	if *cert == "" || *key == "" {
		fmt.Fprintln(stderr, "relay sink: --cert and --key are required")
		return 2
	}
	s, err := bench.StartSink(*listen, bench.SinkConfig{
		CertFile: *cert, KeyFile: *key, ClientCAFile: *clientCA, Secret: *secret, Out: stdout, PrintBody: *body,
	})
	if err != nil {
		fmt.Fprintln(stderr, "relay sink:", err)
		return 1
	}
	fmt.Fprintf(stderr, "relay sink: listening on %s\n", s.URL())
	ctx, stop := signalContext() // a second signal ends the process at once
	defer stop()
	<-ctx.Done()
	sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := s.Close(sctx); err != nil {
		fmt.Fprintln(stderr, "relay sink:", err)
		return 1
	}
	return 0
}
