package main

import (
	"bytes"
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// checkConfig runs `relay check-config` in dir with the given environment
// additions and returns its exit code, stdout and stderr.
func checkConfig(t *testing.T, dir string, env []string, args ...string) (int, string, string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, relayBin, append([]string{"check-config"}, args...)...)
	cmd.Dir = dir
	cmd.Env = cleanEnv(env...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	code := 0
	if err != nil {
		var ee *exec.ExitError
		if !errors.As(err, &ee) {
			t.Fatalf("check-config: %v", err)
		}
		code = ee.ExitCode()
	}
	return code, stdout.String(), stderr.String()
}

// problemLines splits check-config's stderr into its lines, leaving out
// warnings (files that delivery waits for, such as the example's
// certificates): they are not problems.
func problemLines(stderr string) []string {
	var out []string
	for _, l := range strings.Split(strings.TrimRight(stderr, "\n"), "\n") {
		if l != "" && !strings.HasPrefix(l, "warning: ") {
			out = append(out, l)
		}
	}
	return out
}

// requireProblems checks that stderr has exactly one line per wanted
// field, each line starting with the field it names.
func requireProblems(t *testing.T, stderr string, fields ...string) {
	t.Helper()
	lines := problemLines(stderr)
	for _, f := range fields {
		n := 0
		for _, l := range lines {
			if strings.HasPrefix(l, f+":") || strings.Contains(l, f) {
				n++
			}
		}
		if n != 1 {
			t.Errorf("want exactly one line naming %s, found %d", f, n)
		}
	}
	if len(lines) != len(fields) {
		t.Errorf("want %d lines (one per problem: %s), got %d:\n%s", len(fields), strings.Join(fields, ", "), len(lines), stderr)
	}
}

func copyFile(t *testing.T, from, to string) {
	t.Helper()
	b, err := os.ReadFile(from)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(to, b, 0o600); err != nil {
		t.Fatal(err)
	}
}

// TestCheckConfig runs `relay check-config` as an operator would: on the
// repository's example configuration, on configurations with several
// problems, and with RELAY_* environment overrides and --set flags.
func TestCheckConfig(t *testing.T) {
	t.Run("example config is valid", func(t *testing.T) {
		dir := t.TempDir()
		copyFile(t, filepath.Join("..", "..", "relay.yaml"), filepath.Join(dir, "relay.yaml"))
		copyFile(t, filepath.Join("..", "..", "tenants.yaml"), filepath.Join(dir, "tenants.yaml"))
		code, stdout, stderr := checkConfig(t, dir, nil, "--config", filepath.Join(dir, "relay.yaml"))
		if code != 0 {
			t.Fatalf("exit %d, want 0\nstderr:\n%s", code, stderr)
		}
		if strings.TrimSpace(stdout) != "configuration ok" || len(problemLines(stderr)) > 0 {
			t.Errorf("stdout %q, stderr %q; want \"configuration ok\" and no problem (warnings only) on stderr", stdout, stderr)
		}
		// RELAY_CONFIG names the file as well as --config does.
		code, _, stderr = checkConfig(t, dir, []string{"RELAY_CONFIG=" + filepath.Join(dir, "relay.yaml")})
		if code != 0 {
			t.Errorf("with RELAY_CONFIG: exit %d, want 0\n%s", code, stderr)
		}
	})

	// A configuration with three validation problems.
	const threeProblems = `ingress:
  listen: "not-a-host-port"
meta:
  verify_tokens: ["tok"]
  app_secrets: []
kafka:
  produce_timeout: -5s
`
	writeConfig := func(t *testing.T, cfg string) (dir, path string) {
		dir = t.TempDir()
		copyFile(t, filepath.Join("..", "..", "tenants.yaml"), filepath.Join(dir, "tenants.yaml"))
		path = filepath.Join(dir, "relay.yaml")
		if err := os.WriteFile(path, []byte(cfg), 0o600); err != nil {
			t.Fatal(err)
		}
		return dir, path
	}

	t.Run("several problems, one line each", func(t *testing.T) {
		dir, path := writeConfig(t, threeProblems)
		code, stdout, stderr := checkConfig(t, dir, nil, "--config", path)
		if code != 1 {
			t.Errorf("exit %d, want 1", code)
		}
		if strings.Contains(stdout, "ok") {
			t.Errorf("stdout %q says ok", stdout)
		}
		requireProblems(t, stderr, "ingress.listen", "meta.app_secrets", "kafka.produce_timeout")
	})

	t.Run("unknown key reported with the other problems", func(t *testing.T) {
		// An unknown key is one more problem: it must be reported on its own
		// line, naming the key by its path, alongside every other problem,
		// so that one run of check-config shows the operator all of them.
		cfg := strings.Replace(threeProblems, "ingress:\n", "ingress:\n  bogus_key: 1\n", 1)
		dir, path := writeConfig(t, cfg)
		code, _, stderr := checkConfig(t, dir, nil, "--config", path)
		if code != 1 {
			t.Errorf("exit %d, want 1", code)
		}
		requireProblems(t, stderr, "ingress.bogus_key", "ingress.listen", "meta.app_secrets", "kafka.produce_timeout")
	})

	t.Run("unknown key alone", func(t *testing.T) {
		dir, path := writeConfig(t, "ingress:\n  listen: 127.0.0.1:8080\n  bogus_key: 1\nmeta:\n  verify_tokens: [t]\n  app_secrets: [s]\n")
		code, _, stderr := checkConfig(t, dir, nil, "--config", path)
		if code != 1 {
			t.Errorf("exit %d, want 1", code)
		}
		if !strings.Contains(stderr, "bogus_key") {
			t.Errorf("stderr does not name the unknown key:\n%s", stderr)
		}
	})

	t.Run("environment overrides the file", func(t *testing.T) {
		dir, path := writeConfig(t, threeProblems)
		// The environment fixes two problems of the file...
		code, _, stderr := checkConfig(t, dir, []string{"RELAY_INGRESS_LISTEN=127.0.0.1:18080", "RELAY_META_APP_SECRETS=s1,s2"}, "--config", path)
		if code != 1 {
			t.Errorf("exit %d, want 1", code)
		}
		requireProblems(t, stderr, "kafka.produce_timeout")
		// ...and breaks a good one: what is validated is the override.
		code, _, stderr = checkConfig(t, dir, []string{"RELAY_INGRESS_LISTEN=still-not-host-port", "RELAY_META_APP_SECRETS=s1", "RELAY_KAFKA_PRODUCE_TIMEOUT=2s"}, "--config", path)
		if code != 1 {
			t.Errorf("exit %d, want 1", code)
		}
		requireProblems(t, stderr, "ingress.listen")
		if !strings.Contains(stderr, "still-not-host-port") {
			t.Errorf("ingress.listen line does not show the environment's value:\n%s", stderr)
		}
		code, stdout, stderr := checkConfig(t, dir, []string{"RELAY_INGRESS_LISTEN=127.0.0.1:18080", "RELAY_META_APP_SECRETS=s1", "RELAY_KAFKA_PRODUCE_TIMEOUT=2s"}, "--config", path)
		if code != 0 || strings.TrimSpace(stdout) != "configuration ok" {
			t.Errorf("all three fixed by the environment: exit %d, stdout %q, stderr:\n%s", code, stdout, stderr)
		}
		// A value of the wrong type in the environment is refused, naming it.
		code, _, stderr = checkConfig(t, dir, []string{"RELAY_KAFKA_PRODUCE_TIMEOUT=soon"}, "--config", path)
		if code == 0 || !strings.Contains(stderr, "RELAY_KAFKA_PRODUCE_TIMEOUT") {
			t.Errorf("RELAY_KAFKA_PRODUCE_TIMEOUT=soon: exit %d, stderr:\n%s", code, stderr)
		}
	})

	t.Run("--set overrides the environment and the file", func(t *testing.T) {
		dir, path := writeConfig(t, threeProblems)
		code, stdout, stderr := checkConfig(t, dir, []string{"RELAY_INGRESS_LISTEN=env-not-host-port"}, "--config", path,
			"--set", "ingress.listen=127.0.0.1:18081", "--set", "meta.app_secrets=a,b", "--set", "kafka.produce_timeout=3s")
		if code != 0 || strings.TrimSpace(stdout) != "configuration ok" {
			t.Errorf("all fixed by --set: exit %d, stdout %q, stderr:\n%s", code, stdout, stderr)
		}
		code, _, stderr = checkConfig(t, dir, []string{"RELAY_INGRESS_LISTEN=127.0.0.1:18080", "RELAY_META_APP_SECRETS=s"}, "--config", path,
			"--set", "ingress.listen=set-not-host-port", "--set", "kafka.produce_timeout=3s")
		if code != 1 {
			t.Errorf("exit %d, want 1", code)
		}
		requireProblems(t, stderr, "ingress.listen")
		if !strings.Contains(stderr, "set-not-host-port") {
			t.Errorf("ingress.listen line does not show --set's value:\n%s", stderr)
		}
		code, _, stderr = checkConfig(t, dir, nil, "--config", path, "--set", "no.such.key=1")
		if code == 0 || !strings.Contains(stderr, "no.such.key") {
			t.Errorf("--set no.such.key=1: exit %d, stderr:\n%s", code, stderr)
		}
		code, _, stderr = checkConfig(t, dir, nil, "--config", path, "--set", "ingress.listen")
		if code == 0 || !strings.Contains(stderr, "key=value") {
			t.Errorf("--set without '=': exit %d, stderr:\n%s", code, stderr)
		}
	})

	t.Run("tenants file problems, one line each", func(t *testing.T) {
		dir, path := writeConfig(t, "meta:\n  verify_tokens: [t]\n  app_secrets: [s]\n")
		bad := `tenants:
  - id: acme
    accounts: ["1"]
    instance: {mode: push, url: "http://insecure.example/meta", signing_secret: "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"}
  - id: globex
    accounts: ["2"]
    instance: {mode: push, url: "https://127.0.0.1:9444/meta", signing_secret: "not-a-secret"}
`
		if err := os.WriteFile(filepath.Join(dir, "tenants.yaml"), []byte(bad), 0o600); err != nil {
			t.Fatal(err)
		}
		code, _, stderr := checkConfig(t, dir, nil, "--config", path)
		if code != 1 {
			t.Errorf("exit %d, want 1", code)
		}
		requireProblems(t, stderr, "tenants[0].instance.url", "tenants[1].instance.signing_secret")
		for _, l := range problemLines(stderr) {
			if !strings.HasPrefix(l, "tenants.file: ") {
				t.Errorf("line %q does not start with tenants.file:", l)
			}
		}
	})
}

// A valid configuration whose settings work against each other passes
// check-config with a warning naming them.
func TestCheckConfigWarns(t *testing.T) {
	dir := t.TempDir()
	copyFile(t, filepath.Join("..", "..", "relay.yaml"), filepath.Join(dir, "relay.yaml"))
	copyFile(t, filepath.Join("..", "..", "tenants.yaml"), filepath.Join(dir, "tenants.yaml"))
	code, stdout, stderr := checkConfig(t, dir, nil, "--config", filepath.Join(dir, "relay.yaml"),
		"--set", "delivery.timeout=20s", "--set", "shutdown.grace_period=30s")
	if code != 0 || strings.TrimSpace(stdout) != "configuration ok" {
		t.Fatalf("exit %d, stdout %q, want 0 and ok\n%s", code, stdout, stderr)
	}
	if !strings.Contains(stderr, "warning: delivery.timeout (20s) is over half of shutdown.grace_period (30s)") {
		t.Errorf("no warning:\n%s", stderr)
	}
}
