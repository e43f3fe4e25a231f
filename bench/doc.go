// Package bench is the engine behind `relay bench`: it generates Meta-shaped,
// signed webhook load against an ingress URL and measures what comes back.
//
// The pieces, one file each:
//
//   - payload.go: request bodies rendered from embedded templates
//     (templates/*.json), with ids unique per request and routing accounts of
//     chosen tenants, signed with HMAC-SHA256 like Meta does.
//   - tenants.go: a deterministic set of synthetic tenants and the tenants
//     YAML file the relay reads.
//   - histogram.go and recorder.go: latency histograms (HdrHistogram,
//     microseconds) and the per-second time series of a run.
//   - generator.go: the load generator, open loop (fixed rate, latency
//     measured from each request's scheduled send time so coordinated
//     omission does not hide stalls) or closed loop (fixed concurrency);
//     pace_*.go: its sub-millisecond pacing.
//   - result.go: a run's outcome and its JSON form (`--json`).
//   - report.go: the self-contained HTML report with SVG charts (`--report`).
//   - ceiling.go and baseline.go: the two reference servers of compare mode,
//     a do-nothing fasthttp server (the throughput ceiling) and the naive
//     net/http + kafka-go service a team would write in an afternoon.
package bench
