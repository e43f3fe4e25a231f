// Package relay owns the ingress: the fasthttp server Meta posts to, the
// subscription handshake, X-Hub-Signature-256 verification over the raw
// body, splitting a body into one event per entry without re-encoding it,
// event ids and the dedupe of Meta's redeliveries, and the group-commit
// producer that answers a webhook only after Kafka acknowledged every one
// of its events with acks=all.
//
// It knows tenants only through the Resolver interface it declares.
package relay
