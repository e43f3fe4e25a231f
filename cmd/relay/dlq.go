package main

import (
	"context"
	"encoding/json"
	"errors"
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

const dlqUsage = `usage: relay dlq list    --tenant T [--config FILE] [--json] [--values]
       relay dlq redrive --tenant T [--config FILE]

list shows a tenant's dead letters not yet redriven, oldest first: offset,
event id (webhook-id), reason, attempts, first attempt, received at.
redrive writes them back into the tenant's partition of the events topic,
in their original order, and marks them redriven; delivery picks them up.

Both reach Kafka as relay serve does (kafka.brokers, or the embedded
broker of a running relay serve).

flags:
`

func runDLQ(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 || (args[0] != "list" && args[0] != "redrive") {
		if len(args) > 0 && (args[0] == "-h" || args[0] == "--help" || args[0] == "help") {
			fmt.Fprint(stdout, dlqUsage)
			return 0
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
	fs.Usage = func() { fmt.Fprint(fs.Output(), dlqUsage); fs.PrintDefaults() }
	if err := fs.Parse(args[1:]); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return 2
	}
	if *tenantID == "" {
		fmt.Fprintf(stderr, "relay dlq %s: --tenant is required\n", sub)
		return 2
	}
	cfg, err := config.Load(*path, os.Getenv, nil)
	if err != nil {
		fmt.Fprintf(stderr, "relay dlq %s: %v\n", sub, err)
		return 1
	}
	ctx, cancel := context.WithTimeout(context.Background(), *timeout)
	defer cancel()
	transport := &kafka.Transport{ClientID: cfg.Kafka.ClientID + "-dlq"}
	defer transport.CloseIdleConnections()
	client := &kafka.Client{Addr: kafka.TCP(cfg.BrokerAddrs()...), Transport: transport, Timeout: 10 * time.Second}
	dlq := &delivery.DLQ{Client: client, Topic: cfg.Kafka.Topics.DLQ, Events: cfg.Kafka.Topics.Events}

	if sub == "list" {
		dls, err := dlq.List(ctx, *tenantID)
		if err != nil {
			fmt.Fprintf(stderr, "relay dlq list: %v (is Kafka at %v reachable? with the embedded broker, relay serve must be running)\n", err, cfg.BrokerAddrs())
			return 1
		}
		printDeadLetters(stdout, dls, *asJSON, *values)
		return 0
	}

	tenants, err := tenant.LoadFile(cfg.Tenants.File)
	if err != nil {
		fmt.Fprintf(stderr, "relay dlq redrive: %v\n", err)
		return 1
	}
	ids := make([]string, len(tenants))
	for i, t := range tenants {
		ids[i] = t.ID
	}
	if !slices.Contains(ids, *tenantID) {
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
	fmt.Fprintf(stdout, "redrove %d events of tenant %s into %s partition %d\n", n, *tenantID, cfg.Kafka.Topics.Events, part)
	return 0
}

func printDeadLetters(w io.Writer, dls []delivery.DeadLetter, asJSON, values bool) {
	if asJSON {
		enc := json.NewEncoder(w)
		for _, d := range dls {
			row := map[string]any{
				"offset": d.Offset, "tenant": d.Tenant, "event_id": d.EventID, "reason": d.Reason,
				"attempts": d.Attempts, "first_attempt_at": d.FirstAttempt, "received_at": d.ReceivedAt,
			}
			if values {
				row["value"] = json.RawMessage(d.Value)
			}
			_ = enc.Encode(row)
		}
		return
	}
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "OFFSET\tEVENT ID\tATTEMPTS\tFIRST ATTEMPT\tRECEIVED AT\tREASON")
	for _, d := range dls {
		fmt.Fprintf(tw, "%d\t%s\t%d\t%s\t%s\t%s\n", d.Offset, d.EventID, d.Attempts,
			d.FirstAttempt.UTC().Format(time.RFC3339), d.ReceivedAt.UTC().Format(time.RFC3339), d.Reason)
		if values {
			fmt.Fprintf(tw, "\t%s\n", d.Value)
		}
	}
	tw.Flush()
	fmt.Fprintf(w, "%d dead letters\n", len(dls))
}
