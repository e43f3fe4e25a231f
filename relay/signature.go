package relay

import (
	"crypto/hmac"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/hex"
	"hash"
	"sync"
)

// signaturePrefix starts every X-Hub-Signature-256 value Meta sends.
const signaturePrefix = "sha256="

// ParseSignatureHeader decodes an X-Hub-Signature-256 value ("sha256=<64 hex
// digits>") into its 32-byte digest. It accepts upper- and lower-case hex and
// nothing else: no spaces, no other algorithm, no truncated digest.
func ParseSignatureHeader(v []byte) (sum [sha256.Size]byte, err error) {
	if len(v) < len(signaturePrefix) || string(v[:len(signaturePrefix)]) != signaturePrefix {
		return sum, ErrSignatureMalformed
	}
	h := v[len(signaturePrefix):]
	if len(h) != 2*sha256.Size {
		return sum, ErrSignatureMalformed
	}
	if _, err := hex.Decode(sum[:], h); err != nil {
		return sum, ErrSignatureMalformed
	}
	return sum, nil
}

// Verifier checks X-Hub-Signature-256 headers against one or more Meta app
// secrets. Several secrets serve several Meta apps, or a rotation in which
// the old and the new secret are both accepted for a while.
//
// HMAC states are pooled per secret, so a verification allocates nothing.
// A Verifier is safe for concurrent use.
type Verifier struct {
	pools []*sync.Pool
}

// macState is one pooled HMAC with the buffer its digest is written to, so
// that neither escapes to the heap per call.
type macState struct {
	h   hash.Hash
	sum [sha256.Size]byte
}

// NewVerifier returns a Verifier for the given app secrets. It refuses an
// empty list and empty secrets.
func NewVerifier(secrets []string) (*Verifier, error) {
	if len(secrets) == 0 {
		return nil, ErrNoSecrets
	}
	v := &Verifier{pools: make([]*sync.Pool, 0, len(secrets))}
	for _, s := range secrets {
		if s == "" {
			return nil, ErrNoSecrets
		}
		key := []byte(s)
		v.pools = append(v.pools, &sync.Pool{New: func() any { return &macState{h: hmac.New(sha256.New, key)} }})
	}
	return v, nil
}

// Verify reports whether header is a valid signature of body under any of
// the configured secrets. It returns ErrSignatureMissing, ErrSignatureMalformed
// or ErrSignatureMismatch. Every secret is tried, so the time taken does not
// tell which one matched.
func (v *Verifier) Verify(header, body []byte) error {
	if len(header) == 0 {
		return ErrSignatureMissing
	}
	want, err := ParseSignatureHeader(header)
	if err != nil {
		return err
	}
	match := 0
	for _, p := range v.pools {
		m := p.Get().(*macState)
		m.h.Reset()
		m.h.Write(body)
		match |= subtle.ConstantTimeCompare(m.h.Sum(m.sum[:0]), want[:])
		p.Put(m)
	}
	if match != 1 {
		return ErrSignatureMismatch
	}
	return nil
}
