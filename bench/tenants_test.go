package bench

import (
	"bytes"
	"encoding/base64"
	"regexp"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

func TestTenants(t *testing.T) {
	ts := Tenants(3)
	require.Equal(t, Tenant{
		ID: "t0001", Page: "104000000000001", Instagram: "17841400000000001",
		Phone: "106000000000001", WABA: "102000000000001",
	}, ts[0])
	require.Equal(t, "t0003", ts[2].ID)
	require.Equal(t, []string{"104000000000003", "17841400000000003", "106000000000003"}, ts[2].Accounts())
	require.Equal(t, ts, Tenants(3), "deterministic")
	require.Empty(t, Tenants(-1))

	seen := map[string]bool{}
	for _, tn := range Tenants(20_000) {
		require.False(t, seen[tn.ID], tn.ID)
		seen[tn.ID] = true
		for _, a := range append(tn.Accounts(), tn.WABA) {
			require.False(t, seen[a], "account %s reused", a)
			seen[a] = true
		}
	}
	require.Equal(t, "t10000", Tenants(10_000)[9_999].ID)
}

func TestWriteTenantsYAML(t *testing.T) {
	var b bytes.Buffer
	err := WriteTenantsYAML(&b, Tenants(2), func(tn Tenant) Instance {
		if tn.ID == "t0001" {
			return Instance{URL: "https://127.0.0.1:9443/meta", SigningSecret: "whsec_abc"}
		}
		return Instance{Mode: "push", URL: `https://127.0.0.1:9443/"q"`, CAFile: "/tmp/ca.pem", SigningSecret: "whsec_def"}
	})
	require.NoError(t, err)
	require.Equal(t, `tenants:
  - id: t0001
    accounts: ["104000000000001", "17841400000000001", "106000000000001"]
    instance: {mode: push, url: "https://127.0.0.1:9443/meta", ca_file: "", signing_secret: "whsec_abc"}
  - id: t0002
    accounts: ["104000000000002", "17841400000000002", "106000000000002"]
    instance: {mode: push, url: "https://127.0.0.1:9443/\"q\"", ca_file: "/tmp/ca.pem", signing_secret: "whsec_def"}
`, b.String())
}

func TestWriteTenantsYAMLDefaults(t *testing.T) {
	var b bytes.Buffer
	require.NoError(t, WriteTenantsYAML(&b, Tenants(2), nil))
	secrets := regexp.MustCompile(`signing_secret: "(whsec_[A-Za-z0-9+/=]+)"`).FindAllStringSubmatch(b.String(), -1)
	require.Len(t, secrets, 2)
	require.NotEqual(t, secrets[0][1], secrets[1][1])
	for _, s := range secrets {
		raw, err := base64.StdEncoding.DecodeString(strings.TrimPrefix(s[1], "whsec_"))
		require.NoError(t, err)
		require.Len(t, raw, 24)
	}
	require.Contains(t, b.String(), `instance: {mode: push, url: "", ca_file: "", signing_secret: "whsec_`)
}
