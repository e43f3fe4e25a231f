package tenant

import (
	"encoding/base64"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

func noEnv(string) string { return "" }

func TestLoadFile_Valid(t *testing.T) {
	dir := t.TempDir()
	secret := newSecret(t, 32)
	fileSecret := newSecret(t, 24)
	require.NoError(t, os.WriteFile(filepath.Join(dir, "acme-ca.pem"), []byte("not parsed here"), 0o600))
	require.NoError(t, os.MkdirAll(filepath.Join(dir, "secrets"), 0o750))
	require.NoError(t, os.WriteFile(filepath.Join(dir, "secrets", "globex"), []byte(fileSecret+"\n"), 0o600))
	absCA := filepath.Join(t.TempDir(), "abs-ca.pem")
	require.NoError(t, os.WriteFile(absCA, []byte("x"), 0o600))

	path := filepath.Join(dir, "tenants.yaml")
	require.NoError(t, os.WriteFile(path, []byte(`tenants:
  - id: acme
    accounts: ["104857392810345", "17841405822304914", "106540352242922"]
    instance: {mode: push, url: "https://127.0.0.1:9443/meta", ca_file: "acme-ca.pem", signing_secret: "`+secret+`"}
  - id: globex
    accounts: ["209384756102938"]
    instance:
      url: "https://globex.example/hooks"
      ca_file: "`+absCA+`"
      signing_secret_file: secrets/globex
      max_in_flight: 4
`), 0o600))

	got, err := LoadFile(path)
	require.NoError(t, err)
	require.Len(t, got, 2)

	acme, globex := got[0], got[1]
	require.Equal(t, "acme", acme.ID)
	require.Equal(t, []string{"104857392810345", "17841405822304914", "106540352242922"}, acme.Accounts)
	require.Equal(t, ModePush, acme.Instance.Mode)
	require.Equal(t, "https://127.0.0.1:9443/meta", acme.Instance.URL)
	require.Equal(t, filepath.Join(dir, "acme-ca.pem"), acme.Instance.CAFile, "relative ca_file is taken from the file's folder")
	require.Equal(t, secret, acme.Instance.SigningSecret)
	key, err := acme.SigningKey()
	require.NoError(t, err)
	require.Len(t, key, 32)

	require.Equal(t, "globex", globex.ID)
	require.Equal(t, ModePush, globex.Instance.Mode, "mode defaults to push")
	require.Equal(t, absCA, globex.Instance.CAFile, "absolute ca_file is kept")
	require.Equal(t, fileSecret, globex.Instance.SigningSecret, "signing_secret_file is read relative to the file's folder, trimmed")
	require.Equal(t, 4, globex.Instance.MaxInFlight)

	for _, tn := range got {
		require.Zero(t, tn.Partition, "the partition is not read from the file")
	}
}

func TestLoadFile_Missing(t *testing.T) {
	_, err := LoadFile(filepath.Join(t.TempDir(), "nope.yaml"))
	require.ErrorIs(t, err, ErrInvalidFile)
	require.ErrorIs(t, err, os.ErrNotExist)
}

func TestParse_Empty(t *testing.T) {
	got, err := parse([]byte("tenants: []\n"), t.TempDir(), noEnv)
	require.NoError(t, err, "an explicit empty list means no tenants")
	require.Empty(t, got)
	// An empty or truncated file (an editor caught mid-write) must not
	// drop every tenant.
	for _, data := range []string{"", "# nothing yet\n", "other: 1\n"} {
		_, err := parse([]byte(data), t.TempDir(), noEnv)
		require.ErrorIs(t, err, ErrInvalidFile, "%q", data)
	}
}

func TestParse_SecretPrecedence(t *testing.T) {
	inline, fromFile, fromEnv := newSecret(t, 16), newSecret(t, 20), newSecret(t, 40)
	dir := t.TempDir()
	require.NoError(t, os.WriteFile(filepath.Join(dir, "s"), []byte("  "+fromFile+"\n\n"), 0o600))
	env := func(m map[string]string) func(string) string {
		return func(k string) string { return m[k] }
	}
	tests := []struct {
		name   string
		id     string
		inst   string
		getenv func(string) string
		want   string
	}{
		{name: "inline only", id: "acme", inst: `signing_secret: "` + inline + `"`, getenv: noEnv, want: inline},
		{name: "file over inline", id: "acme", inst: `signing_secret: "` + inline + `", signing_secret_file: s`, getenv: noEnv, want: fromFile},
		{name: "file alone", id: "acme", inst: `signing_secret_file: ./s`, getenv: noEnv, want: fromFile},
		{name: "env over file and inline", id: "acme", inst: `signing_secret: "` + inline + `", signing_secret_file: s`,
			getenv: env(map[string]string{"RELAY_TENANT_ACME_SIGNING_SECRET": fromEnv}), want: fromEnv},
		{name: "env alone", id: "acme", inst: "",
			getenv: env(map[string]string{"RELAY_TENANT_ACME_SIGNING_SECRET": fromEnv}), want: fromEnv},
		{name: "env name maps other characters to _", id: "acme-eu.1", inst: `signing_secret: "` + inline + `"`,
			getenv: env(map[string]string{"RELAY_TENANT_ACME_EU_1_SIGNING_SECRET": fromEnv}), want: fromEnv},
		{name: "another tenant's env is not used", id: "acme", inst: `signing_secret: "` + inline + `"`,
			getenv: env(map[string]string{"RELAY_TENANT_GLOBEX_SIGNING_SECRET": fromEnv}), want: inline},
		{name: "empty env is no override", id: "acme", inst: `signing_secret: "` + inline + `"`,
			getenv: env(map[string]string{"RELAY_TENANT_ACME_SIGNING_SECRET": ""}), want: inline},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			inst := `url: "https://x.example/"`
			if tt.inst != "" {
				inst += ", " + tt.inst
			}
			data := "tenants:\n  - id: " + tt.id + "\n    accounts: [\"1\"]\n    instance: {" + inst + "}\n"
			got, err := parse([]byte(data), dir, tt.getenv)
			require.NoError(t, err, data)
			require.Len(t, got, 1)
			require.Equal(t, tt.want, got[0].Instance.SigningSecret)
		})
	}
}

// previous_signing_secret comes from the same places as signing_secret,
// in the same order, and is empty when none is given.
func TestParse_PreviousSecret(t *testing.T) {
	current, inline, fromFile, fromEnv := newSecret(t, 32), newSecret(t, 16), newSecret(t, 20), newSecret(t, 40)
	dir := t.TempDir()
	require.NoError(t, os.WriteFile(filepath.Join(dir, "old"), []byte(fromFile+"\n"), 0o600))
	load := func(inst string, getenv func(string) string) *Tenant {
		t.Helper()
		data := "tenants:\n  - id: acme\n    accounts: [\"1\"]\n    instance: {url: \"https://x.example/\", signing_secret: \"" + current + "\"" + inst + "}\n"
		got, err := parse([]byte(data), dir, getenv)
		require.NoError(t, err, data)
		return got[0]
	}
	none := load("", noEnv)
	require.Empty(t, none.Instance.PreviousSigningSecret)
	key, err := none.PreviousSigningKey()
	require.NoError(t, err)
	require.Nil(t, key)

	require.Equal(t, inline, load(`, previous_signing_secret: "`+inline+`"`, noEnv).Instance.PreviousSigningSecret)
	require.Equal(t, fromFile, load(`, previous_signing_secret: "`+inline+`", previous_signing_secret_file: old`, noEnv).Instance.PreviousSigningSecret)
	env := func(k string) string {
		return map[string]string{"RELAY_TENANT_ACME_PREVIOUS_SIGNING_SECRET": fromEnv}[k]
	}
	got := load(`, previous_signing_secret_file: old`, env)
	require.Equal(t, fromEnv, got.Instance.PreviousSigningSecret)
	require.Equal(t, current, got.Instance.SigningSecret, "the current secret is not touched")
	key, err = got.PreviousSigningKey()
	require.NoError(t, err)
	require.Len(t, key, 40)
	require.Equal(t, "RELAY_TENANT_A_SIGNING_SECRET_PREVIOUS_SIGNING_SECRET", PreviousSecretEnv("a_signing_secret"))
}

func TestSecretEnv(t *testing.T) {
	for id, want := range map[string]string{
		"acme":       "RELAY_TENANT_ACME_SIGNING_SECRET",
		"Acme-EU.1":  "RELAY_TENANT_ACME_EU_1_SIGNING_SECRET",
		"a_b":        "RELAY_TENANT_A_B_SIGNING_SECRET",
		"tenant42":   "RELAY_TENANT_TENANT42_SIGNING_SECRET",
		"x.y-z_0.9A": "RELAY_TENANT_X_Y_Z_0_9A_SIGNING_SECRET",
	} {
		require.Equal(t, want, SecretEnv(id), id)
	}
}

func TestParse_Invalid(t *testing.T) {
	dir := t.TempDir()
	good := newSecret(t, 32)
	short := signingSecretPrefix + base64.StdEncoding.EncodeToString(make([]byte, 15))
	// tenant renders one tenant entry with instance fields inst.
	tenant := func(id, accounts, inst string) string {
		return "  - id: " + id + "\n    accounts: " + accounts + "\n    instance: {" + inst + "}\n"
	}
	okInst := `url: "https://127.0.0.1:9443/meta", signing_secret: "` + good + `"`
	acme := tenant("acme", `["104857392810345", "17841405822304914"]`, okInst)

	tests := []struct {
		name   string
		data   string
		getenv func(string) string
		want   []string // substrings of the error: the field and what is wrong
	}{
		{name: "not YAML", data: "tenants: [\n", want: []string{"yaml"}},
		{name: "tenants is not a list", data: "tenants: {id: acme}\n", want: []string{"line 1: cannot unmarshal !!map into a list of tenants"}},
		{name: "unknown top-level key", data: "tenant:\n" + acme, want: []string{"line 1: unknown key tenant"}},
		{name: "unknown tenant key", data: "tenants:\n" + acme + "    colour: blue\n", want: []string{"unknown key colour"}},
		{name: "unknown instance key", data: "tenants:\n" + tenant("acme", `["1"]`, okInst+`, timeout: 3s`), want: []string{"unknown key timeout"}},
		{name: "empty entry", data: "tenants:\n  -\n", want: []string{"tenants[0]: empty entry"}},
		{name: "bad id", data: "tenants:\n" + tenant("-acme", `["1"]`, okInst), want: []string{"tenants[0].id", `"-acme"`}},
		{name: "id too long", data: "tenants:\n" + tenant(strings.Repeat("a", 65), `["1"]`, okInst), want: []string{"tenants[0].id"}},
		{name: "no accounts", data: "tenants:\n" + tenant("acme", `[]`, okInst), want: []string{"tenants[0].accounts: at least one"}},
		{name: "empty account", data: "tenants:\n" + acme + tenant("globex", `[""]`, okInst), want: []string{"tenants[1].accounts[0]", "not an account id"}},
		{name: "account with a space", data: "tenants:\n" + acme + tenant("globex", `["1", "2 3"]`, okInst), want: []string{"tenants[1].accounts[1]"}},
		{name: "account claimed by two tenants", data: "tenants:\n" + acme + tenant("globex", `["17841405822304914"]`, okInst),
			want: []string{"tenants[1].accounts[0]", "17841405822304914", `also claimed by tenant "acme"`}},
		{name: "duplicate id", data: "tenants:\n" + acme + tenant("globex", `["2"]`, okInst) + tenant("acme", `["3"]`, okInst),
			want: []string{"tenants[2].id", `"acme" is also tenants[0].id`}},
		{name: "http url", data: "tenants:\n" + tenant("acme", `["1"]`, `url: "http://127.0.0.1:9443/meta", signing_secret: "`+good+`"`),
			want: []string{"tenants[0].instance.url", "https://"}},
		{name: "no url in push mode", data: "tenants:\n" + tenant("acme", `["1"]`, `mode: push, signing_secret: "`+good+`"`),
			want: []string{"tenants[0].instance.url"}},
		{name: "url without host", data: "tenants:\n" + tenant("acme", `["1"]`, `url: "https:///meta", signing_secret: "`+good+`"`),
			want: []string{"tenants[0].instance.url"}},
		{name: "unknown mode", data: "tenants:\n" + tenant("acme", `["1"]`, `mode: pull, signing_secret: "`+good+`"`),
			want: []string{"tenants[0].instance.mode", `"pull"`}},
		{name: "subscribe mode, not built", data: "tenants:\n" + tenant("acme", `["1"]`, `mode: subscribe, signing_secret: "`+good+`"`),
			want: []string{"tenants[0].instance.mode", `"subscribe" is not available`}},
		{name: "no signing secret", data: "tenants:\n" + tenant("acme", `["1"]`, `url: "https://x.example/"`),
			want: []string{"tenants[0].instance.signing_secret", "must start with"}},
		{name: "signing secret prefix", data: "tenants:\n" + tenant("acme", `["1"]`, `url: "https://x.example/", signing_secret: "`+good[len(signingSecretPrefix):]+`"`),
			want: []string{"tenants[0].instance.signing_secret", `must start with "whsec_"`}},
		{name: "signing secret not base64", data: "tenants:\n" + tenant("acme", `["1"]`, `url: "https://x.example/", signing_secret: "whsec_not*base64!!"`),
			want: []string{"tenants[0].instance.signing_secret", "standard base64"}},
		{name: "signing secret url-safe base64", data: "tenants:\n" + tenant("acme", `["1"]`, `url: "https://x.example/", signing_secret: "whsec_-_-_-_-_-_-_-_-_-_-_-_-_-_-_-_-_-_-_-_-_"`),
			want: []string{"tenants[0].instance.signing_secret", "standard base64"}},
		{name: "signing secret too short", data: "tenants:\n" + tenant("acme", `["1"]`, `url: "https://x.example/", signing_secret: "`+short+`"`),
			want: []string{"tenants[0].instance.signing_secret", "at least 16 bytes (got 15)"}},
		{name: "bad secret from env", data: "tenants:\n" + acme,
			getenv: func(k string) string {
				if k == "RELAY_TENANT_ACME_SIGNING_SECRET" {
					return "whsec_short"
				}
				return ""
			},
			want: []string{"tenants[0].instance.signing_secret"}},
		{name: "missing signing_secret_file", data: "tenants:\n" + tenant("acme", `["1"]`, `url: "https://x.example/", signing_secret_file: nope.txt`),
			want: []string{"tenants[0].instance.signing_secret_file", filepath.Join(dir, "nope.txt")}},
		{name: "previous signing secret too short", data: "tenants:\n" + tenant("acme", `["1"]`, okInst+`, previous_signing_secret: "`+short+`"`),
			want: []string{"tenants[0].instance.previous_signing_secret", "at least 16 bytes (got 15)"}},
		{name: "missing previous_signing_secret_file", data: "tenants:\n" + tenant("acme", `["1"]`, okInst+`, previous_signing_secret_file: old.txt`),
			want: []string{"tenants[0].instance.previous_signing_secret_file", filepath.Join(dir, "old.txt")}},
		{name: "two ids, one previous secret variable, set", data: "tenants:\n" + tenant("acme-eu", `["1"]`, okInst) + tenant("acme.eu", `["2"]`, okInst),
			getenv: func(k string) string {
				if k == "RELAY_TENANT_ACME_EU_PREVIOUS_SIGNING_SECRET" {
					return good
				}
				return ""
			},
			want: []string{"tenants[1].id", "share the secret variable RELAY_TENANT_ACME_EU_PREVIOUS_SIGNING_SECRET"}},
		{name: "one's previous secret variable is another's secret variable, set", data: "tenants:\n" + tenant("acme", `["1"]`, okInst) + tenant("acme-previous", `["2"]`, okInst),
			getenv: func(k string) string {
				if k == "RELAY_TENANT_ACME_PREVIOUS_SIGNING_SECRET" {
					return good
				}
				return ""
			},
			want: []string{"tenants[1].id", `"acme-previous" and tenant "acme" share the secret variable RELAY_TENANT_ACME_PREVIOUS_SIGNING_SECRET`}},
		{name: "negative max_in_flight", data: "tenants:\n" + tenant("acme", `["1"]`, okInst+`, max_in_flight: -1`),
			want: []string{"tenants[0].instance.max_in_flight"}},
		{name: "a second YAML document", data: "tenants: []\n---\ntenants:\n" + acme,
			want: []string{"more than one YAML document"}},
		{name: "two ids, one secret variable, set", data: "tenants:\n" + tenant("acme-eu", `["1"]`, okInst) + tenant("acme.eu", `["2"]`, okInst),
			getenv: func(k string) string {
				if k == "RELAY_TENANT_ACME_EU_SIGNING_SECRET" {
					return good
				}
				return ""
			},
			want: []string{"tenants[1].id", `"acme.eu" and tenant "acme-eu" share the secret variable RELAY_TENANT_ACME_EU_SIGNING_SECRET, which is set`}},
		{name: "syntax error in a second document", data: "tenants: []\n---\ntenants: [\n", want: []string{"yaml"}},
		{name: "every problem is reported", data: "tenants:\n" + tenant("acme", `[""]`, `url: "http://x"`) + tenant("acme", `["2"]`, okInst),
			want: []string{"tenants[0].accounts[0]", "tenants[0].instance.url", "tenants[0].instance.signing_secret", "tenants[1].id"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			getenv := tt.getenv
			if getenv == nil {
				getenv = noEnv
			}
			got, err := parse([]byte(tt.data), dir, getenv)
			require.Error(t, err, tt.data)
			require.Nil(t, got)
			require.ErrorIs(t, err, ErrInvalidFile)
			require.True(t, strings.HasPrefix(err.Error(), ErrInvalidFile.Error()+": "), err.Error())
			for _, w := range tt.want {
				require.Contains(t, err.Error(), w)
			}

			// The same through LoadFile, from a file in dir.
			path := filepath.Join(dir, "tenants.yaml")
			require.NoError(t, os.WriteFile(path, []byte(tt.data), 0o600))
			if tt.getenv == nil {
				_, err = LoadFile(path)
				require.ErrorIs(t, err, ErrInvalidFile)
				require.Contains(t, err.Error(), tt.want[0])
			}
		})
	}
}

func TestTenant_FingerprintAndKey(t *testing.T) {
	base := Tenant{ID: "acme", Accounts: []string{"1"}, Instance: Instance{Mode: ModePush, URL: "https://x.example/", SigningSecret: newSecret(t, 16)}}
	fp := base.Fingerprint()
	require.Len(t, fp, 24)
	same := base
	same.Accounts = []string{"2", "3"}
	same.Partition = 7
	require.Equal(t, fp, same.Fingerprint(), "accounts and partition are not delivery settings")
	for name, mut := range map[string]func(*Tenant){
		"url":             func(t *Tenant) { t.Instance.URL += "x" },
		"mode":            func(t *Tenant) { t.Instance.Mode = ModeSubscribe },
		"ca":              func(t *Tenant) { t.Instance.CAFile = "/ca.pem" },
		"secret":          func(t *Tenant) { t.Instance.SigningSecret += "AAAA" },
		"previous secret": func(t *Tenant) { t.Instance.PreviousSigningSecret = "whsec_AAAA" },
		"flight":          func(t *Tenant) { t.Instance.MaxInFlight = 2 },
	} {
		c := base
		mut(&c)
		require.NotEqual(t, fp, c.Fingerprint(), name)
		require.NotContains(t, c.Fingerprint(), c.Instance.SigningSecret)
	}

	key, err := base.SigningKey()
	require.NoError(t, err)
	want, _ := base64.StdEncoding.DecodeString(strings.TrimPrefix(base.Instance.SigningSecret, signingSecretPrefix))
	require.Equal(t, want, key)
	_, err = (&Tenant{Instance: Instance{SigningSecret: "nope"}}).SigningKey()
	require.Error(t, err)
	require.False(t, errors.Is(err, ErrInvalidFile))
}

// Documents with nothing in them around the one that counts are harmless
// (Helm and other generators write them), and ids that would share a
// secret variable are fine while that variable is not set.
func TestParse_HarmlessExtras(t *testing.T) {
	good := newSecret(t, 32)
	acme := "tenants:\n  - id: acme\n    accounts: [\"1\"]\n    instance: {url: \"https://x.example/\", signing_secret: \"" + good + "\"}\n"
	for name, data := range map[string]string{
		"leading ---":         "---\n" + acme,
		"trailing ---":        acme + "---\n",
		"trailing --- no EOL": acme + "---",
		"comments after ---":  acme + "---\n# nothing here\n",
		"end marker":          acme + "...\n",
		"end marker then ---": acme + "...\n---\n",
	} {
		t.Run(name, func(t *testing.T) {
			got, err := parse([]byte(data), t.TempDir(), noEnv)
			require.NoError(t, err)
			require.Len(t, got, 1)
		})
	}
	two := "tenants:\n  - id: acme-eu\n    accounts: [\"1\"]\n    instance: {url: \"https://x.example/\", signing_secret: \"" + good + "\"}\n" +
		"  - id: acme.eu\n    accounts: [\"2\"]\n    instance: {url: \"https://x.example/\", signing_secret: \"" + good + "\"}\n"
	got, err := parse([]byte(two), t.TempDir(), noEnv)
	require.NoError(t, err)
	require.Len(t, got, 2)
}

// Type problems come one per line, each marked invalid, in the file's
// words: check-config prints them as separate problems.
func TestParseTypeProblemsOnePerLine(t *testing.T) {
	_, err := parse([]byte("tenants:\n  - id: acme\n    acounts: [\"1\"]\n    instance: [1]\n"), t.TempDir(), noEnv)
	require.ErrorIs(t, err, ErrInvalidFile)
	lines := strings.Split(err.Error(), "\n")
	require.Equal(t, []string{
		"invalid tenants file: line 3: unknown key acounts",
		"invalid tenants file: line 4: cannot unmarshal !!seq into an instance",
	}, lines)
}
