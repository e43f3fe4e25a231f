package relay

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"testing"
)

// FuzzParseSignatureHeader: never panics; accepts exactly "sha256=" and 64
// hex digits, and then decodes them.
func FuzzParseSignatureHeader(f *testing.F) {
	for _, fx := range loadFixtures(f) {
		f.Add([]byte(fx.signature))
	}
	f.Add([]byte("sha1=abc"))
	f.Add([]byte("sha256="))
	f.Add([]byte(""))
	f.Fuzz(func(t *testing.T, header []byte) {
		sum, err := ParseSignatureHeader(header)
		valid := len(header) == len("sha256=")+64 && bytes.HasPrefix(header, []byte("sha256="))
		if valid {
			_, herr := hex.DecodeString(string(header[len("sha256="):]))
			valid = herr == nil
		}
		if valid != (err == nil) {
			t.Fatalf("ParseSignatureHeader(%q) err=%v, want valid=%v", header, err, valid)
		}
		if err == nil {
			want, _ := hex.DecodeString(string(header[len("sha256="):]))
			if !bytes.Equal(want, sum[:]) {
				t.Fatalf("decoded %x, want %x", sum, want)
			}
		}
		// Verify must agree and never panic.
		v, _ := NewVerifier([]string{testSecret})
		if verr := v.Verify(header, header); err != nil && verr == nil {
			t.Fatalf("Verify accepted a malformed header %q", header)
		}
		_ = sha256.Size
	})
}

// FuzzSplitBody: never panics; agrees with encoding/json on validity; when
// it accepts a body, the entries are exactly encoding/json's entry[]
// elements, byte for byte, and the object matches.
func FuzzSplitBody(f *testing.F) {
	for _, fx := range loadFixtures(f) {
		f.Add(fx.body)
	}
	f.Add([]byte(`{"object":"page","entry":[]}`))
	f.Add([]byte(`{"object":"pa\u0067e","entry":[{"id":1e3,"changes":[{"value":{"metadata":{"phone_number_id":"\u0031"}}}]}]}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		var b Body
		err := SplitBody(data, &b)
		valid := json.Valid(data)
		if errors.Is(err, ErrBodyInvalid) && valid {
			t.Fatalf("refused valid JSON %q", data)
		}
		if (err == nil || errors.Is(err, ErrNotWebhook)) && !valid {
			t.Fatalf("accepted invalid JSON %q", data)
		}
		if err != nil {
			return
		}
		var doc struct {
			Object *string           `json:"object"`
			Entry  []json.RawMessage `json:"entry"`
		}
		if jerr := json.Unmarshal(data, &doc); jerr != nil {
			t.Fatalf("accepted %q that encoding/json cannot decode as a webhook: %v", data, jerr)
		}
		if doc.Object == nil || *doc.Object != string(b.Object) {
			t.Fatalf("object %q, encoding/json says %v", b.Object, doc.Object)
		}
		if len(doc.Entry) != len(b.Entries) {
			t.Fatalf("%d entries, encoding/json says %d", len(b.Entries), len(doc.Entry))
		}
		for i, e := range b.Entries {
			if !bytes.Equal(e.Raw, doc.Entry[i]) {
				t.Fatalf("entry %d = %q, encoding/json says %q", i, e.Raw, doc.Entry[i])
			}
			var v map[string]any
			if json.Unmarshal(e.Raw, &v) != nil {
				t.Fatalf("entry %d is not an object: %q", i, e.Raw)
			}
		}
	})
}
