package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"os"
	"slices"
	"text/tabwriter"
	"time"

	"github.com/segmentio/kafka-go"

	"github.com/relaymw/relay/cmd/relay/internal/config"
	"github.com/relaymw/relay/delivery"
	"github.com/relaymw/relay/tenant"
)

const dlqUsage = `usage: relay dlq list    --tenant T [--config FILE] [--set key=value ...] [--json] [--values]
       relay dlq redrive --tenant T [--config FILE] [--set key=value ...]
       (both: [--timeout D], 30s by default)

list shows a tenant's dead letters not yet redriven, oldest first: offset,
event id (webhook-id), reason, attempts, first attempt, received at.
redrive writes them back into the tenant's partition of the events topic,
in their original order, and marks them redriven; delivery picks them up.
Both read the DLQ as they go, so memory stays small whatever its size; for
a large one, raise --timeout. A redrive stopped part way (--timeout,
Ctrl-C, a refused write) marks what it wrote: run it again to go on.

Both reach Kafka as relay serve does (kafka.brokers, or the embedded
broker of a running relay serve): give them the configuration serve has,
the same file, RELAY_ variables and --set flags.

`

func runDLQ(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 || (args[0] != "list" && args[0] != "redrive") {
		if len(args) > 0 && (args[0] == "-h" || args[0] == "--help" || args[0] == "help") {
			fmt.Fprint(stdout, dlqUsage, "relay dlq list -h (or redrive -h) lists the flags.\n")
			return 0
		}
		if len(args) == 0 {
			fmt.Fprintln(stderr, "relay dlq: missing subcommand: list or redrive")
		} else {
			fmt.Fprintf(stderr, "relay dlq: unknown subcommand %q: list or redrive\n", args[0])
		}
		fmt.Fprint(stderr, dlqUsage)
		return 2
	}
	sub := args[0]
	fs := flag.NewFlagSet("relay dlq "+sub, flag.ContinueOnError)
	fs.SetOutput(stderr)
	path := fs.String("config", os.Getenv("RELAY_CONFIG"), "configuration file (YAML); also RELAY_CONFIG")
	tenantID := fs.String("tenant", "", "the tenant id (required)")
	asJSON := fs.Bool("json", false, "list: one JSON object per line")
	values := fs.Bool("values", false, "list: include each event's body (message contents)")
	timeout := fs.Duration("timeout", 30*time.Second, "give up after this long")
	var sets setFlags
	fs.Var(&sets, "set", "override one key as relay serve's --set does, e.g. --set kafka.embedded.listen=127.0.0.1:19092 (repeatable)")
	fs.Usage = func() { fmt.Fprint(fs.Output(), dlqUsage, "flags:\n"); fs.PrintDefaults() }
	if code, ok := parseArgs(fs, args[1:], stderr); !ok {
		return code
	}
	if *tenantID == "" {
		fmt.Fprintf(stderr, "relay dlq %s: --tenant is required\n", sub)
		return 2
	}
	cfg, err := config.Load(*path, os.Getenv, sets)
	if err != nil {
		fmt.Fprintf(stderr, "relay dlq %s: %v\n", sub, err)
		return 1
	}
	// Ctrl-C or SIGTERM ends ctx like --timeout does, so that a redrive
	// stopped part way still marks what it wrote.
	sctx, stop := signalContext()
	defer stop()
	ctx, cancel := context.WithTimeout(sctx, *timeout)
	defer cancel()
	transport := &kafka.Transport{ClientID: cfg.Kafka.ClientID + "-dlq"}
	defer transport.CloseIdleConnections()
	client := &kafka.Client{Addr: kafka.TCP(cfg.BrokerAddrs()...), Transport: transport, Timeout: 10 * time.Second}
	dlq := &delivery.DLQ{Client: client, Topic: cfg.Kafka.Topics.DLQ, Events: cfg.Kafka.Topics.Events}

	known, err := tenantListed(cfg.Tenants.File, *tenantID)
	if sub == "list" {
		// A removed tenant may still have dead letters: list them, but
		// say so, since a misspelt id lists none.
		if err != nil {
			fmt.Fprintf(stderr, "relay dlq list: warning: %v\n", err)
		} else if !known {
			fmt.Fprintf(stderr, "relay dlq list: warning: tenant %q is not in %s\n", *tenantID, cfg.Tenants.File)
		}
		// Printed as read: a tenant may have millions of dead letters.
		pr := newDeadLetterPrinter(stdout, *asJSON, *values)
		err := dlq.Each(ctx, *tenantID, pr.print)
		pr.done(err == nil)
		if err != nil {
			hint := ""
			if ctx.Err() == nil {
				hint = fmt.Sprintf(" (is Kafka at %v reachable? with the embedded broker, relay serve must be running, and this command needs its configuration: the same --config, RELAY_ variables and --set)", cfg.BrokerAddrs())
			}
			what := "the list above is incomplete"
			if pr.rows == 0 {
				what = "nothing was listed"
			}
			fmt.Fprintf(stderr, "relay dlq list: %v%s; %s\n", err, hint, what)
			return 1
		}
		return 0
	}

	if err != nil {
		fmt.Fprintf(stderr, "relay dlq redrive: %v\n", err)
		return 1
	}
	if !known {
		fmt.Fprintf(stderr, "relay dlq redrive: tenant %q is not in %s\n", *tenantID, cfg.Tenants.File)
		return 1
	}
	// The tenants file says the tenant is served (a removed tenant's events
	// would only be dead-lettered again). Its partition comes from Kafka,
	// claiming nothing: this file may be older or newer than the relays'.
	admin := &tenant.Admin{Client: client, Brokers: cfg.BrokerAddrs(), ReplicationFactor: -1}
	part, ok, err := (&tenant.Assigner{Admin: admin, Topic: cfg.Kafka.Topics.Tenants, Events: cfg.Kafka.Topics.Events}).Partition(ctx, *tenantID)
	if err != nil {
		fmt.Fprintf(stderr, "relay dlq redrive: %v\n", err)
		return 1
	}
	if !ok {
		fmt.Fprintf(stderr, "relay dlq redrive: tenant %q has no partition yet: a relay serving it assigns one\n", *tenantID)
		return 1
	}
	n, err := dlq.Redrive(ctx, *tenantID, part)
	if err != nil {
		fmt.Fprintf(stderr, "relay dlq redrive: %d redriven; %v\n", n, err)
		return 1
	}
	fmt.Fprintf(stdout, "redrove %d of tenant %s's dead letters into %s partition %d\n", n, *tenantID, cfg.Kafka.Topics.Events, part)
	return 0
}

// tenantListed reports whether the tenants file lists id.
func tenantListed(file, id string) (bool, error) {
	tenants, err := tenant.LoadFile(file)
	if err != nil {
		return false, err
	}
	return slices.ContainsFunc(tenants, func(t *tenant.Tenant) bool { return t.ID == id }), nil
}

// deadLetterPrinter prints dead letters as they are read: JSON lines, or a
// table aligned in blocks of tableBlock rows.
type deadLetterPrinter struct {
	w             io.Writer
	json          *json.Encoder // nil for the table
	tw            *tabwriter.Writer
	values        bool
	rows, inBlock int
}

const tableBlock = 1000

func newDeadLetterPrinter(w io.Writer, asJSON, values bool) *deadLetterPrinter {
	p := &deadLetterPrinter{w: w, values: values}
	if asJSON {
		p.json = json.NewEncoder(w)
	} else {
		p.tw = tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
		header := "OFFSET\tEVENT ID\tATTEMPTS\tFIRST ATTEMPT\tRECEIVED AT\tREASON"
		if values {
			header += "\tVALUE" // last, so that the columns stay aligned
		}
		fmt.Fprintln(p.tw, header)
	}
	return p
}

func (p *deadLetterPrinter) print(d delivery.DeadLetter) error {
	p.rows++
	if p.json != nil {
		row := map[string]any{
			"offset": d.Offset, "tenant": d.Tenant, "event_id": d.EventID, "reason": d.Reason,
			"attempts": d.Attempts, "first_attempt_at": d.FirstAttempt, "received_at": d.ReceivedAt,
		}
		if p.values {
			row["value"] = json.RawMessage(d.Value)
		}
		return p.json.Encode(row)
	}
	fmt.Fprintf(p.tw, "%d\t%s\t%d\t%s\t%s\t%s", d.Offset, d.EventID, d.Attempts,
		d.FirstAttempt.UTC().Format(time.RFC3339), d.ReceivedAt.UTC().Format(time.RFC3339), d.Reason)
	if p.values {
		fmt.Fprintf(p.tw, "\t%s", d.Value)
	}
	fmt.Fprintln(p.tw)
	if p.inBlock++; p.inBlock == tableBlock {
		p.inBlock = 0
		return p.tw.Flush()
	}
	return nil
}

// done ends the table, with the count when the whole list was read.
func (p *deadLetterPrinter) done(complete bool) {
	if p.tw == nil || p.rows == 0 && !complete {
		return // a header over nothing would look like an empty list
	}
	p.tw.Flush()
	if complete {
		fmt.Fprintf(p.w, "%d dead letters\n", p.rows)
	}
}
