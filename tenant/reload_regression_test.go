package tenant

import (
	"context"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// Regression: a file refused because a signing_secret_file did not exist
// yet (a Kubernetes Secret mounted after the ConfigMap) was never tried
// again by the timer, only on SIGHUP or a restart, since Watch looks at
// the tenants file's checksum. It now also retries a refused file.
func TestWatchRetriesARefusedFile(t *testing.T) {
	secret := newSecret(t, 32)
	r := newTestRegistry(t, tenantsYAML(secret, acmeSpec), func(c *RegistryConfig) { c.RetryRefused = 50 * time.Millisecond })
	require.NoError(t, r.reload(t))
	writeFile(t, r.file, tenantsYAML(secret, acmeSpec)+
		"  - id: globex\n    accounts: [\"209384756102938\"]\n    instance: {url: \"https://g.example/\", signing_secret_file: globex.secret}\n")

	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Go(func() { r.Watch(ctx, 10*time.Millisecond) })
	t.Cleanup(func() { cancel(); wg.Wait() })
	require.Eventually(t, func() bool { return r.counts().failed >= 1 }, 5*time.Second, 5*time.Millisecond)

	require.NoError(t, os.WriteFile(filepath.Join(filepath.Dir(r.file), "globex.secret"), []byte(secret), 0o600))
	require.Eventually(t, func() bool { return r.Snapshot().Tenant("globex") != nil }, 5*time.Second, 10*time.Millisecond,
		"globex loaded once its secret file exists")
}

// Regression: Reload waited for a reload under way without looking at its
// context. Watch's reload stuck in BeforeSwap (Kafka unreachable) then
// held serve's SIGHUP handling, and with it SIGTERM, for as long as Kafka
// was away. Reload now gives up when its context ends, and Watch's own
// reloads have a deadline.
func TestReloadGivesUpBehindAStuckReload(t *testing.T) {
	secret := newSecret(t, 32)
	stuck := make(chan struct{}, 1)
	r := newTestRegistry(t, tenantsYAML(secret, acmeSpec), func(c *RegistryConfig) {
		c.BeforeSwap = func(ctx context.Context, s *Snapshot) error {
			if s.Tenant("globex") == nil {
				return nil
			}
			select { // as WaitPartitions while Kafka is unreachable
			case stuck <- struct{}{}:
			default:
			}
			<-ctx.Done()
			return ctx.Err()
		}
	})
	require.NoError(t, r.reload(t))
	bg, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Go(func() { r.Watch(bg, 10*time.Millisecond) })
	t.Cleanup(func() { cancel(); wg.Wait() })
	writeFile(t, r.file, tenantsYAML(secret, acmeSpec, globexSpec))
	select {
	case <-stuck:
	case <-time.After(5 * time.Second):
		t.Fatal("Watch's reload never reached BeforeSwap")
	}

	ctx, stop := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer stop()
	done := make(chan error, 1)
	go func() { done <- r.Reload(ctx) }() // serve's SIGHUP path
	failed := r.counts().failed
	select {
	case err := <-done:
		require.ErrorContains(t, err, "another reload is under way")
		require.Equal(t, failed+1, r.counts().failed, "counted, as a refused reload is")
	case <-time.After(3 * time.Second):
		t.Fatal("Reload with a 200 ms deadline still waiting after 3 s")
	}
}

// A secret file replaced while the tenants file stays the same (a
// rotation, a Kubernetes Secret updated) is picked up by Watch as a
// change of the tenants file is: Watch used to look at the tenants file
// only, so the new secret waited for a SIGHUP.
func TestWatchSeesAReplacedSecretFile(t *testing.T) {
	oldSecret, rotated := newSecret(t, 32), newSecret(t, 32)
	r := newTestRegistry(t, tenantsYAML(oldSecret, acmeSpec)+
		"  - id: globex\n    accounts: [\"209384756102938\"]\n    instance: {url: \"https://g.example/\", signing_secret_file: secrets/globex, previous_signing_secret_file: secrets/globex.old}\n", nil)
	dir := filepath.Join(filepath.Dir(r.file), "secrets")
	require.NoError(t, os.MkdirAll(dir, 0o700))
	writeFile(t, filepath.Join(dir, "globex"), oldSecret)
	writeFile(t, filepath.Join(dir, "globex.old"), oldSecret)
	require.NoError(t, r.reload(t))
	require.Equal(t, oldSecret, r.Snapshot().Tenant("globex").Instance.SigningSecret)

	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Go(func() { r.Watch(ctx, 10*time.Millisecond) })
	t.Cleanup(func() { cancel(); wg.Wait() })
	writeFile(t, filepath.Join(dir, "globex"), rotated)
	require.Eventually(t, func() bool { return r.Snapshot().Tenant("globex").Instance.SigningSecret == rotated }, 5*time.Second, 10*time.Millisecond,
		"the replaced secret file is read")
	require.Equal(t, oldSecret, r.Snapshot().Tenant("globex").Instance.PreviousSigningSecret)
	require.Eventually(t, func() bool { return r.counts().ok == 2 }, 5*time.Second, 10*time.Millisecond)
	writeFile(t, filepath.Join(dir, "globex.old"), rotated)
	require.Eventually(t, func() bool { return r.Snapshot().Tenant("globex").Instance.PreviousSigningSecret == rotated }, 5*time.Second, 10*time.Millisecond)
	require.Eventually(t, func() bool { return r.counts().ok == 3 }, 5*time.Second, 10*time.Millisecond)
	require.Never(t, func() bool { return r.counts().ok > 3 }, 100*time.Millisecond, 10*time.Millisecond, "one reload per change")
}
