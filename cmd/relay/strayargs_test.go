package main

import (
	"bytes"
	"context"
	"errors"
	"os/exec"
	"strings"
	"testing"
	"time"
)

// TestStrayArgumentsAreRefused: every command refuses an argument that is
// no flag. Go's flag package stops at the first one, so the flags after it
// were dropped unseen: "relay dlq redrive --tenant acme x --config
// prod.yaml" ran on the default configuration instead of prod.yaml, and
// "relay sink ... x --listen ADDR" listened on its default address.
func TestStrayArgumentsAreRefused(t *testing.T) {
	certs := dlvDevCA(t, "acme")
	e := newRelayEnv(t, relayOptions{})
	for _, args := range [][]string{
		{"dlq", "list", "--tenant", "acme", "stray", "--config", e.ConfigPath, "--timeout", "1s"},
		{"dlq", "redrive", "--tenant", "acme", "stray", "--config", e.ConfigPath, "--timeout", "1s"},
		{"sink", "--cert", certs.Tenants["acme"].Cert, "--key", certs.Tenants["acme"].Key, "stray", "--listen", freeAddr(t)},
		{"serve", "stray", "--config", e.ConfigPath},
		{"check-config", "stray", "--config", e.ConfigPath},
	} {
		t.Run(strings.Join(args[:2], " "), func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			cmd := exec.CommandContext(ctx, relayBin, args...)
			cmd.Dir = t.TempDir()
			cmd.Env = cleanEnv()
			var out bytes.Buffer
			cmd.Stdout, cmd.Stderr = &out, &out
			err := cmd.Run()
			code := 0
			var ee *exec.ExitError
			if errors.As(err, &ee) {
				code = ee.ExitCode()
			}
			if ctx.Err() != nil {
				t.Errorf("relay %s: still running after 5s (killed); output:\n%s", strings.Join(args, " "), out.String())
				return
			}
			if code != 2 || !strings.Contains(out.String(), `unexpected argument "stray"`) {
				t.Errorf("relay %s: exit %d, want 2 and 'unexpected argument \"stray\"'; output:\n%s", strings.Join(args, " "), code, out.String())
			}
		})
	}
}
