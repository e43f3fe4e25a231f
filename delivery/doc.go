// Package delivery owns everything after the log: the consumer runtime (a
// consumer group over relay.events, one worker per assigned partition,
// offsets committed only after an event is done with), the modules that
// plug into it, and its first module, the instance sink, which delivers
// each tenant's events to the tenant's instance over mutual TLS with a
// circuit breaker per tenant, retries with backoff, and dead letters.
//
// Modules (the instance sink here; bot, agent routing and privacy later)
// each run in their own consumer group and see every event of the log in
// partition order. One partition belongs to one tenant, so one tenant's
// slow or dead instance holds back only its own partition's worker.
package delivery
