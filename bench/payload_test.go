package bench

import (
	"bufio"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

const fixtureDir = "../testdata/meta"

func TestTemplateNames(t *testing.T) {
	names := TemplateNames()
	require.Equal(t, []string{
		"batch_two_pages", "instagram_comment", "instagram_dm", "messenger_message",
		"messenger_postback_and_receipts", "page_feed_comment", "whatsapp_message_and_status",
	}, names)
	for _, n := range names {
		_, err := loadTemplate(n)
		require.NoError(t, err, n)
	}
	_, err := NewPayloads(PayloadOptions{Tenants: Tenants(1), Templates: []string{"nope"}})
	require.ErrorContains(t, err, "unknown template")
}

func TestParseTemplateErrors(t *testing.T) {
	for raw, want := range map[string]string{
		`{"id":"{{page}}"}`:               "exactly one {{pad}}",
		`{"id":"{{page}}","t":"{{pad}`:    "unterminated",
		`{"id":"{{nope}}","t":"{{pad}}"}`: "unknown placeholder",
		`{"id":"1","t":"{{pad}}"}`:        "no routing account",
	} {
		_, err := parseTemplate("x", []byte(raw))
		require.ErrorContains(t, err, want, raw)
	}
}

// keyPaths returns the set of object key paths in a JSON document, array
// indices collapsed: the shape of a body, regardless of its values.
func keyPaths(t *testing.T, body []byte) []string {
	t.Helper()
	var v any
	require.NoError(t, json.Unmarshal(body, &v), string(body))
	set := map[string]bool{}
	var walk func(prefix string, v any)
	walk = func(prefix string, v any) {
		switch v := v.(type) {
		case map[string]any:
			for k, c := range v {
				set[prefix+"."+k] = true
				walk(prefix+"."+k, c)
			}
		case []any:
			for _, c := range v {
				walk(prefix+"[]", c)
			}
		}
	}
	walk("", v)
	out := make([]string, 0, len(set))
	for k := range set {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

// Templates keep the shape of the fixtures they were copied from.
func TestTemplatesMatchFixtures(t *testing.T) {
	for _, name := range TemplateNames() {
		fixture, err := os.ReadFile(filepath.Join(fixtureDir, name+".json"))
		require.NoError(t, err)
		p, err := NewPayloads(PayloadOptions{Tenants: Tenants(3), Templates: []string{name}})
		require.NoError(t, err)
		body := p.AppendBody(nil, 42)
		assert.Equal(t, keyPaths(t, fixture), keyPaths(t, body), name)
	}
}

// routing returns the routing account of every entry the way the relay
// reads it: WhatsApp phone_number_id first, else the entry id.
func routing(t *testing.T, body []byte) []string {
	t.Helper()
	var doc struct {
		Entry []struct {
			ID      string `json:"id"`
			Changes []struct {
				Value struct {
					Metadata struct {
						PhoneNumberID string `json:"phone_number_id"`
					} `json:"metadata"`
				} `json:"value"`
			} `json:"changes"`
		} `json:"entry"`
	}
	require.NoError(t, json.Unmarshal(body, &doc))
	var out []string
	for _, e := range doc.Entry {
		acc := e.ID
		for _, c := range e.Changes {
			if id := c.Value.Metadata.PhoneNumberID; id != "" {
				acc = id
			}
		}
		out = append(out, acc)
	}
	return out
}

// uniqueTokens returns the string values of body rendered from {{id}} or
// {{num}}: those containing the run nonce.
func uniqueTokens(t *testing.T, p *Payloads, body []byte) []string {
	t.Helper()
	var v any
	require.NoError(t, json.Unmarshal(body, &v))
	var out []string
	var walk func(v any)
	walk = func(v any) {
		switch v := v.(type) {
		case map[string]any:
			for _, c := range v {
				walk(c)
			}
		case []any:
			for _, c := range v {
				walk(c)
			}
		case string:
			if strings.Contains(v, string(p.nonceHex[:])) || strings.Contains(v, "_"+string(p.nonceNum[:])) ||
				strings.HasPrefix(v, string(p.nonceNum[:])) {
				out = append(out, v)
			}
		}
	}
	walk(v)
	return out
}

func TestBodies(t *testing.T) {
	const secret = "app-secret"
	tenants := Tenants(5)
	owner := map[string]int{} // account -> tenant index
	for i, tn := range tenants {
		for _, a := range tn.Accounts() {
			owner[a] = i
		}
	}
	for _, size := range []int{0, 100, 4096} {
		p, err := NewPayloads(PayloadOptions{Tenants: tenants, Size: size})
		require.NoError(t, err)
		signer := NewSigner(secret)
		var prev []string
		var buf []byte
		for seq := uint64(1000); seq < 1000+7*20; seq++ {
			buf = p.AppendBody(buf[:0], seq)
			name := p.Template(seq)
			require.True(t, json.Valid(buf), "%s: %s", name, buf)

			// Signed like Meta: HMAC-SHA256 of the exact bytes.
			sig := string(signer.AppendSignature(nil, buf))
			mac := hmac.New(sha256.New, []byte(secret))
			mac.Write(buf)
			require.Equal(t, "sha256="+hex.EncodeToString(mac.Sum(nil)), sig)
			require.True(t, VerifySignature(secret, buf, sig))
			require.False(t, VerifySignature("other", buf, sig))

			// Unique ids, within a body and between consecutive bodies.
			toks := uniqueTokens(t, p, buf)
			require.NotEmpty(t, toks, name)
			require.Len(t, compactSorted(toks), len(toks), "ids repeat within %s: %v", name, toks)
			for _, tok := range toks {
				require.NotContains(t, prev, tok, "id repeats between consecutive bodies")
			}
			prev = toks

			// Routed to the tenant of seq (a batch's second entry: the next tenant).
			k := p.Tenant(seq)
			accs := routing(t, buf)
			require.NotEmpty(t, accs)
			for i, a := range accs {
				o, ok := owner[a]
				require.True(t, ok, "%s routes to %s, no tenant's account", name, a)
				if i == 0 || name != "batch_two_pages" {
					require.Equal(t, k, o, name)
				} else {
					require.Equal(t, (k+1)%len(tenants), o, name)
				}
			}

			// Size: the target exactly, unless the template is larger.
			target := size
			if target == 0 {
				target = DefaultBodySize
			}
			if target >= 1000 { // every template is smaller
				require.Equal(t, target, len(buf), name)
			} else {
				require.NotContains(t, string(buf), "Lorem", name)
			}
		}
	}
}

func compactSorted(s []string) []string {
	s = slices.Clone(s)
	slices.Sort(s)
	return slices.Compact(s)
}

func TestTenantSpread(t *testing.T) {
	p, err := NewPayloads(PayloadOptions{Tenants: Tenants(10)})
	require.NoError(t, err)
	counts := make([]int, 10)
	for seq := uint64(0); seq < 10_000; seq++ {
		counts[p.Tenant(seq)]++
	}
	for k, c := range counts {
		assert.InDelta(t, 1000, c, 150, "tenant %d", k)
	}
}

// Different Payloads (runs) render different ids for the same seq.
func TestIDsDifferAcrossRuns(t *testing.T) {
	a, err := NewPayloads(PayloadOptions{Tenants: Tenants(1), Templates: []string{"messenger_message"}})
	require.NoError(t, err)
	b, err := NewPayloads(PayloadOptions{Tenants: Tenants(1), Templates: []string{"messenger_message"}})
	require.NoError(t, err)
	require.NotEqual(t, uniqueTokens(t, a, a.AppendBody(nil, 1)), uniqueTokens(t, b, b.AppendBody(nil, 1)))
}

// Sign agrees with the signatures listed next to the fixtures.
func TestSignMatchesFixtures(t *testing.T) {
	f, err := os.Open(filepath.Join(fixtureDir, "SIGNATURES.txt"))
	require.NoError(t, err)
	defer f.Close()
	checked := 0
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) != 3 || !strings.HasPrefix(fields[2], "sha256=") {
			continue
		}
		body, err := os.ReadFile(filepath.Join(fixtureDir, fields[0]))
		require.NoError(t, err)
		require.Equal(t, fields[2], Sign("test_app_secret", body), fields[0])
		require.True(t, VerifySignature("test_app_secret", body, fields[2]))
		checked++
	}
	require.NoError(t, sc.Err())
	require.GreaterOrEqual(t, checked, 8)
	require.False(t, VerifySignature("s", []byte("x"), "sha1=00"))
	require.False(t, VerifySignature("s", []byte("x"), "sha256=zz"))
}

func TestPayloadOptionsErrors(t *testing.T) {
	_, err := NewPayloads(PayloadOptions{})
	require.Error(t, err)
	_, err = NewPayloads(PayloadOptions{Tenants: Tenants(1), Size: MaxBodySize + 1})
	require.Error(t, err)
}

// Rendering and signing a body allocates nothing: the generator is never
// the bottleneck.
func TestAppendBodyAllocs(t *testing.T) {
	p, err := NewPayloads(PayloadOptions{Tenants: Tenants(100)})
	require.NoError(t, err)
	s := NewSigner("secret")
	buf := make([]byte, 0, 4096)
	sig := make([]byte, 0, 128)
	seq := uint64(0)
	allocs := testing.AllocsPerRun(200, func() {
		seq++
		buf = p.AppendBody(buf[:0], seq)
		sig = s.AppendSignature(sig[:0], buf)
	})
	require.Zero(t, allocs)
}

func BenchmarkAppendBodyAndSign(b *testing.B) {
	p, err := NewPayloads(PayloadOptions{Tenants: Tenants(100)})
	require.NoError(b, err)
	s := NewSigner("secret")
	buf := make([]byte, 0, 4096)
	sig := make([]byte, 0, 128)
	b.ReportAllocs()
	b.SetBytes(DefaultBodySize)
	for i := 0; b.Loop(); i++ {
		buf = p.AppendBody(buf[:0], uint64(i))
		sig = s.AppendSignature(sig[:0], buf)
	}
}
