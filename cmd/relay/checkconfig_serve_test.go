package main

import (
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestCheckConfigRefusesWhatServeRefuses: what relay serve refuses at
// start, check-config refuses too, naming the field. It used to say
// "configuration ok" of an ingress key pair that does not load (it only
// looked for the files) and of listen addresses that cannot be bound.
func TestCheckConfigRefusesWhatServeRefuses(t *testing.T) {
	if _, err := exec.LookPath("openssl"); err != nil {
		t.Fatalf("openssl is required: %v", err)
	}
	certs := dlvDevCA(t, "acme")
	// The ingress key, encrypted with a passphrase (what openssl writes
	// when the operator forgets -nodes / -noenc).
	encKey := filepath.Join(t.TempDir(), "ingress-key-encrypted.pem")
	if out, err := exec.Command("openssl", "pkey", "-in", certs.Ingress.Key, "-aes256", "-passout", "pass:secret", "-out", encKey).CombinedOutput(); err != nil {
		t.Fatalf("openssl: %v\n%s", err, out)
	}
	cases := []struct {
		name  string
		field string // what check-config's line should name
		sets  func(e *relayEnv) []string
	}{
		{"encrypted ingress key", "ingress.tls", func(*relayEnv) []string {
			return []string{"ingress.tls.cert_file=" + certs.Ingress.Cert, "ingress.tls.key_file=" + encKey}
		}},
		{"ingress key of another certificate", "ingress.tls", func(*relayEnv) []string {
			return []string{"ingress.tls.cert_file=" + certs.Ingress.Cert, "ingress.tls.key_file=" + certs.Tenants["acme"].Key}
		}},
		{"ingress certificate file not a certificate", "ingress.tls", func(*relayEnv) []string {
			return []string{"ingress.tls.cert_file=" + certs.Ingress.Key, "ingress.tls.key_file=" + certs.Ingress.Key}
		}},
		{"ingress port out of range", "ingress.listen", func(*relayEnv) []string {
			return []string{"ingress.listen=127.0.0.1:99999"}
		}},
		{"ingress and admin on one address", "ingress.listen", func(e *relayEnv) []string {
			return []string{"ingress.listen=" + e.Admin}
		}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			e := newRelayEnv(t, relayOptions{Delivery: "{enabled: false}"})
			var args []string
			for _, s := range tc.sets(e) {
				args = append(args, "--set", s)
			}
			// relay serve refuses it at start...
			p := e.spawn(args...)
			if !p.wait(30 * time.Second) {
				t.Fatalf("relay serve did not exit")
			}
			if p.state.ExitCode() != 1 {
				t.Fatalf("relay serve exit %d, want 1\n%s", p.state.ExitCode(), p.Stderr())
			}
			t.Logf("relay serve: %s", lastLine(p.Stderr()))
			// ...so check-config must not call it ok.
			code, stdout, stderr := checkConfig(t, e.Dir, nil, append([]string{"--config", e.ConfigPath}, args...)...)
			if code != 1 || strings.Contains(stdout, "configuration ok") || !strings.Contains(stderr, tc.field) {
				t.Errorf("check-config: exit %d, stdout %q, stderr %q; want exit 1 and a line naming %s", code, stdout, stderr, tc.field)
			}
		})
	}
}

func lastLine(s string) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	return lines[len(lines)-1]
}

// TestServeRefusesSettingsThatCannotWork: settings that can never work
// are refused at start, naming the field, where serve used to retry for
// ever, never ready: a max_body_bytes whose topic limit (1 MiB more)
// overflowed, so that the embedded broker refused every write, and a
// replication factor over 1 on the one-node embedded broker.
func TestServeRefusesSettingsThatCannotWork(t *testing.T) {
	for _, tc := range []struct {
		name, field string
		opts        relayOptions
		sets        []string
	}{
		{"max_body_bytes overflow", "max_body_bytes", relayOptions{MaxBodyBytes: 9223372036854775807}, nil},
		{"replication factor 3 on the embedded broker", "replication_factor", relayOptions{}, []string{"--set", "kafka.replication_factor=3"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tc.opts.Delivery = "{enabled: false}"
			e := newRelayEnv(t, tc.opts)
			code, stdout, stderr := checkConfig(t, e.Dir, nil, append([]string{"--config", e.ConfigPath}, tc.sets...)...)
			if code != 1 || !strings.Contains(stderr, tc.field) {
				t.Errorf("check-config: exit %d, stdout %q, stderr %q; want exit 1 and a line naming %s", code, stdout, stderr, tc.field)
			}
			p := e.spawn(tc.sets...)
			if !p.wait(20 * time.Second) {
				t.Fatalf("relay serve still running after 20s, want it to refuse %s; last log line:\n%s", tc.field, lastLine(p.Stderr()))
			}
			if p.state.ExitCode() != 1 || !strings.Contains(p.Stderr(), tc.field) {
				t.Errorf("relay serve: exit %d, want 1 naming %s; last log line:\n%s", p.state.ExitCode(), tc.field, lastLine(p.Stderr()))
			}
		})
	}
}
