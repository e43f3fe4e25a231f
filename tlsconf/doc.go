// Package tlsconf owns every *tls.Config of the relay: the HTTPS ingress
// server (NewServer), the mutual-TLS client used to deliver to tenant
// instances (NewClient, Client.Dialer), the certificate and CA files behind
// them, reloaded from disk without a restart (LoadKeyPair, LoadCAPool), and
// the development CA behind "relay certs init" (NewCA, InitDevCA).
//
// Files are re-read lazily: at most once per check interval (one second by
// default), a handshake compares the files' content with what is loaded and
// parses them again if they changed. There are no background goroutines. A
// replacement that fails to parse (a half-written file, a key that does not
// match its certificate, an encrypted key) or whose certificate has expired
// keeps the previous certificate serving and is reported by LastError until
// the files are valid again. At load the same files are an error, but for
// an expired certificate loaded by NewServer, which is served (NotAfter
// tells the caller): a peer that does not verify it still gets through.
//
// Every config requires TLS 1.2 or later and verifies its peer; nothing in
// this package skips verification.
package tlsconf
