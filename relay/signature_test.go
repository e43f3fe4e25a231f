package relay

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

func sign(secret string, body []byte) string {
	m := hmac.New(sha256.New, []byte(secret))
	m.Write(body)
	return "sha256=" + hex.EncodeToString(m.Sum(nil))
}

func TestVerifierFixtures(t *testing.T) {
	v, err := NewVerifier([]string{testSecret})
	require.NoError(t, err)
	for _, f := range loadFixtures(t) {
		t.Run(f.name, func(t *testing.T) {
			require.NoError(t, v.Verify([]byte(f.signature), f.body))
			require.Equal(t, f.signature, sign(testSecret, f.body), "SIGNATURES.txt and our HMAC agree")
		})
	}
}

// unescapedVector is signature_vector_escaped.raw re-serialised the way a
// JSON library would (escapes decoded); Meta signed the escaped form.
func unescapedVector(raw []byte) []byte {
	return []byte(strings.NewReplacer(
		`\u00e1`, "á", `\u00e9`, "é", `\/`, "/", `\u0040`, "@", `\ud83d\ude00`, "😀",
	).Replace(string(raw)))
}

func TestVerifierEscapedVector(t *testing.T) {
	f := fixtureByName(t, "signature_vector_escaped.raw")
	v, err := NewVerifier([]string{testSecret})
	require.NoError(t, err)
	require.NoError(t, v.Verify([]byte(f.signature), f.body), "verifies as sent")

	re := unescapedVector(f.body)
	require.NotEqual(t, f.body, re)
	// SIGNATURES.txt gives the re-serialised form's HMAC: make sure we built that form.
	require.Equal(t, "sha256=8c42d0bc7a2488344b4b4b478459a21b14cce6f4aa6ca1846f6ec99d4298193c", sign(testSecret, re))
	require.ErrorIs(t, v.Verify([]byte(f.signature), re), ErrSignatureMismatch)
}

func TestVerifierRejects(t *testing.T) {
	body := fixtureByName(t, "messenger_message.json").body
	good := sign(testSecret, body)
	v, err := NewVerifier([]string{"old_secret", testSecret})
	require.NoError(t, err)
	for _, tc := range []struct {
		name   string
		header string
		want   error
	}{
		{"missing", "", ErrSignatureMissing},
		{"sha1 only", "sha1=" + strings.Repeat("ab", 20), ErrSignatureMalformed},
		{"wrong prefix", "sha512=" + good[len("sha256="):], ErrSignatureMalformed},
		{"no prefix", good[len("sha256="):], ErrSignatureMalformed},
		{"upper-case prefix", "SHA256=" + good[len("sha256="):], ErrSignatureMalformed},
		{"bad hex", "sha256=" + strings.Repeat("zz", 32), ErrSignatureMalformed},
		{"short", good[:len(good)-2], ErrSignatureMalformed},
		{"long", good + "00", ErrSignatureMalformed},
		{"space", good + " ", ErrSignatureMalformed},
		{"wrong secret", sign("wrong_secret", body), ErrSignatureMismatch},
		{"other body", sign(testSecret, append([]byte{' '}, body...)), ErrSignatureMismatch},
	} {
		t.Run(tc.name, func(t *testing.T) {
			require.ErrorIs(t, v.Verify([]byte(tc.header), body), tc.want)
		})
	}
	t.Run("upper-case hex accepted", func(t *testing.T) {
		require.NoError(t, v.Verify([]byte("sha256="+strings.ToUpper(good[len("sha256="):])), body))
	})
	t.Run("second secret (rotation)", func(t *testing.T) {
		require.NoError(t, v.Verify([]byte(sign("old_secret", body)), body))
	})
}

func TestNewVerifierRefusesEmpty(t *testing.T) {
	_, err := NewVerifier(nil)
	require.ErrorIs(t, err, ErrNoSecrets)
	_, err = NewVerifier([]string{"a", ""})
	require.ErrorIs(t, err, ErrNoSecrets)
}

func TestVerifyAllocatesNothing(t *testing.T) {
	if raceEnabled {
		t.Skip("allocation counts are checked without -race: .ci/run runs this test again without it")
	}
	body := fixtureByName(t, "whatsapp_message_and_status.json").body
	header := []byte(sign(testSecret, body))
	v, err := NewVerifier([]string{"a", "b", testSecret})
	require.NoError(t, err)
	allocs := testing.AllocsPerRun(100, func() {
		if err := v.Verify(header, body); err != nil {
			t.Fatal(err)
		}
	})
	require.Zero(t, allocs)
}
