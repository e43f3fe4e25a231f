package relay

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"unicode/utf8"
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
		if doc.Object == nil || *doc.Object != jsonCoerced(b.Object) {
			t.Fatalf("object %q, encoding/json says %v", b.Object, doc.Object)
		}
		if len(doc.Entry) != len(b.Entries) {
			t.Fatalf("%d entries, encoding/json says %d", len(b.Entries), len(doc.Entry))
		}
		for i, e := range b.Entries {
			if !bytes.Equal(e.Raw, doc.Entry[i]) {
				t.Fatalf("entry %d = %q, encoding/json says %q", i, e.Raw, doc.Entry[i])
			}
			// An object, and valid on its own (numbers may overflow a
			// float64 and still be valid JSON, so no decoding here).
			if len(e.Raw) == 0 || e.Raw[0] != '{' || !json.Valid(e.Raw) {
				t.Fatalf("entry %d is not an object: %q", i, e.Raw)
			}
		}
	})
}

// jsonCoerced is s as encoding/json decodes a string: each byte that is not
// part of valid UTF-8 becomes U+FFFD. The splitter keeps the bytes as sent.
func jsonCoerced(s []byte) string {
	var b strings.Builder
	for len(s) > 0 {
		r, n := utf8.DecodeRune(s)
		if r == utf8.RuneError && n == 1 {
			b.WriteRune(utf8.RuneError)
		} else {
			b.Write(s[:n])
		}
		s = s[n:]
	}
	return b.String()
}
