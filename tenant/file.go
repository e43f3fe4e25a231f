package tenant

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"strings"

	"go.yaml.in/yaml/v3"
)

// fileFormat is the tenants file:
//
//	tenants:
//	  - id: acme
//	    accounts: ["104857392810345"]
//	    instance: {mode: push, url: "https://…", ca_file: "", signing_secret: "whsec_…"}
type fileFormat struct {
	// A pointer, to tell a missing list (an empty or truncated file: refused)
	// from an explicit "tenants: []" (no tenants: accepted).
	Tenants *[]*Tenant `yaml:"tenants"`
}

// LoadFile reads and validates a tenants file. A ca_file that does not
// exist is not an error here: delivery to that tenant waits for it, and
// the other tenants are not held back (relay check-config warns of it). Relative ca_file and
// signing_secret_file paths are taken relative to the file's folder.
// Secrets are taken, in increasing precedence, from signing_secret,
// signing_secret_file and the environment variable
// RELAY_TENANT_<ID>_SIGNING_SECRET (ID upper-cased, other characters as
// '_'); likewise previous_signing_secret (…_PREVIOUS_SIGNING_SECRET).
// Every problem is reported, each naming its field, wrapped in
// ErrInvalidFile.
func LoadFile(path string) ([]*Tenant, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrInvalidFile, err)
	}
	return parse(data, filepath.Dir(path), os.Getenv)
}

// goTypeNames puts the file's words for the Go types yaml names.
var goTypeNames = strings.NewReplacer(
	"into []*tenant.Tenant", "into a list of tenants",
	"into tenant.Tenant", "into a tenant",
	"into tenant.Instance", "into an instance",
	"into []string", "into a list of strings",
)

// unknownField matches yaml's words for a key no field takes.
var unknownField = regexp.MustCompile(`^(line \d+: )field (\S+) not found in type \S+$`)

func parse(data []byte, dir string, getenv func(string) string) ([]*Tenant, error) {
	return parseReading(data, dir, getenv, os.ReadFile)
}

// parseReading is parse reading secret files with readFile: the registry
// keeps the bytes it read, to checksum the very content it loaded.
func parseReading(data []byte, dir string, getenv func(string) string, readFile func(string) ([]byte, error)) ([]*Tenant, error) {
	var f fileFormat
	dec := yaml.NewDecoder(bytes.NewReader(data))
	dec.KnownFields(true)
	if err := dec.Decode(&f); err != nil && !errors.Is(err, io.EOF) {
		var te *yaml.TypeError
		if !errors.As(err, &te) {
			return nil, fmt.Errorf("%w: %w", ErrInvalidFile, err)
		}
		// One problem per line, in the file's words rather than Go's.
		errs := make([]error, len(te.Errors))
		for i, e := range te.Errors {
			if m := unknownField.FindStringSubmatch(e); m != nil {
				e = m[1] + "unknown key " + m[2]
			}
			e = goTypeNames.Replace(e)
			errs[i] = fmt.Errorf("%w: %s", ErrInvalidFile, e)
		}
		return nil, errors.Join(errs...)
	}
	// A second document would be ignored, and its tenants with it. An empty
	// one (a trailing "---", comments) is harmless.
	for {
		var doc yaml.Node
		err := dec.Decode(&doc)
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return nil, fmt.Errorf("%w: %w", ErrInvalidFile, err)
		}
		if len(doc.Content) > 0 && doc.Content[0].Tag != "!!null" {
			return nil, fmt.Errorf("%w: more than one YAML document (---); put every tenant under the one tenants: list", ErrInvalidFile)
		}
	}
	if f.Tenants == nil {
		return nil, fmt.Errorf(`%w: tenants: missing (an empty file is refused; write "tenants: []" for no tenants)`, ErrInvalidFile)
	}
	tenants := *f.Tenants
	var errs []error
	ids := make(map[string]int, len(tenants))
	envs := make(map[string]string, 2*len(tenants)) // secret variable → tenant id
	owners := make(map[string]string)
	for i, t := range tenants {
		field := fmt.Sprintf("tenants[%d]", i)
		if t == nil {
			errs = append(errs, fmt.Errorf("%s: empty entry", field))
			continue
		}
		if t.Instance.Mode == "" {
			t.Instance.Mode = ModePush
		}
		if t.Instance.CAFile != "" && !filepath.IsAbs(t.Instance.CAFile) {
			t.Instance.CAFile = filepath.Join(dir, t.Instance.CAFile)
		}
		errs = append(errs, resolveSecrets(t, field, dir, getenv, readFile)...)
		errs = append(errs, t.validate(field)...)
		if j, dup := ids[t.ID]; dup {
			errs = append(errs, fmt.Errorf("%s.id: %q is also tenants[%d].id", field, t.ID, j))
		}
		ids[t.ID] = i
		// One variable name may come from two tenants' ids, and even be
		// one's secret and another's previous secret ("acme"'s previous,
		// "acme-previous"'s current).
		for _, v := range []string{SecretEnv(t.ID), PreviousSecretEnv(t.ID)} {
			if other, dup := envs[v]; dup && other != t.ID && getenv(v) != "" {
				// The variable is set, and would set both tenants' secrets.
				errs = append(errs, fmt.Errorf("%s.id: %q and tenant %q share the secret variable %s, which is set: give them their secrets another way", field, t.ID, other, v))
			}
			envs[v] = t.ID
		}
		for k, a := range t.Accounts {
			if other, dup := owners[a]; dup && other != t.ID {
				errs = append(errs, fmt.Errorf("%s.accounts[%d]: account %s is also claimed by tenant %q", field, k, a, other))
			}
			owners[a] = t.ID
		}
	}
	if len(errs) > 0 {
		return nil, fmt.Errorf("%w: %w", ErrInvalidFile, errors.Join(errs...))
	}
	return tenants, nil
}

// resolveSecrets takes each of t's secrets from its _file key and its
// environment variable, which override the plain key in that order.
func resolveSecrets(t *Tenant, field, dir string, getenv func(string) string, readFile func(string) ([]byte, error)) []error {
	var errs []error
	in := &t.Instance
	for _, s := range []struct {
		value           *string
		file, name, env string
	}{
		{&in.SigningSecret, in.SigningSecretFile, "signing_secret_file", SecretEnv(t.ID)},
		{&in.PreviousSigningSecret, in.PreviousSigningSecretFile, "previous_signing_secret_file", PreviousSecretEnv(t.ID)},
	} {
		if p := s.file; p != "" {
			if !filepath.IsAbs(p) {
				p = filepath.Join(dir, p)
			}
			b, err := readFile(p)
			if err != nil {
				errs = append(errs, fmt.Errorf("%s.instance.%s: %w", field, s.name, err))
			} else {
				*s.value = strings.TrimSpace(string(b))
			}
		}
		if v := getenv(s.env); v != "" {
			*s.value = v
		}
	}
	return errs
}

// SecretEnv is the environment variable that overrides a tenant's signing
// secret: RELAY_TENANT_<ID>_SIGNING_SECRET.
func SecretEnv(id string) string {
	b := []byte(strings.ToUpper(id))
	for i, c := range b {
		if (c < 'A' || c > 'Z') && (c < '0' || c > '9') {
			b[i] = '_'
		}
	}
	return "RELAY_TENANT_" + string(b) + "_SIGNING_SECRET"
}

// PreviousSecretEnv is the environment variable that overrides a tenant's
// previous signing secret: RELAY_TENANT_<ID>_PREVIOUS_SIGNING_SECRET.
func PreviousSecretEnv(id string) string {
	return strings.TrimSuffix(SecretEnv(id), "_SIGNING_SECRET") + "_PREVIOUS_SIGNING_SECRET"
}
