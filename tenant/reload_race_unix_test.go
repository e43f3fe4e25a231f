//go:build unix

package tenant

import (
	"context"
	"os"
	"path/filepath"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// Regression (found in review): a secret file replaced while a reload ran,
// after the parse read it and before the checksum read it again, left the
// old secret loaded and the new file's content in the checksum, so Watch
// never loaded it. The checksum is now of the bytes the parse read.
// globex's secret file is a FIFO used as a hook: the parse blocks on it
// right after reading acme's, and the test replaces acme's file there.
func TestRegressionSecretReplacedDuringAReloadIsLoaded(t *testing.T) {
	oldSecret, rotated, globexSecret := newSecret(t, 32), newSecret(t, 32), newSecret(t, 32)
	r := newTestRegistry(t, "tenants:\n"+
		"  - id: acme\n    accounts: [\"1\"]\n    instance: {url: \"https://a.example/\", signing_secret_file: acme.secret}\n"+
		"  - id: globex\n    accounts: [\"2\"]\n    instance: {url: \"https://g.example/\", signing_secret_file: globex.secret}\n", nil)
	dir := filepath.Dir(r.file)
	acmeFile, hook := filepath.Join(dir, "acme.secret"), filepath.Join(dir, "globex.secret")
	writeFile(t, acmeFile, oldSecret)
	require.NoError(t, syscall.Mkfifo(hook, 0o600))

	hooked := make(chan struct{})
	go func() {
		defer close(hooked)
		w, err := os.OpenFile(hook, os.O_WRONLY, 0) // returns once the parse opened it: acme's file was read
		if err != nil {
			return
		}
		writeFile(t, acmeFile, rotated)  // the rotation lands now
		writeFile(t, hook, globexSecret) // a plain file from now on
		_, _ = w.WriteString(globexSecret)
		w.Close()
	}()
	require.NoError(t, r.reload(t))
	<-hooked
	require.Equal(t, oldSecret, r.Snapshot().Tenant("acme").Instance.SigningSecret, "the parse read the old secret")

	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Go(func() { r.Watch(ctx, 10*time.Millisecond) })
	t.Cleanup(func() { cancel(); wg.Wait() })
	require.Eventually(t, func() bool { return r.Snapshot().Tenant("acme").Instance.SigningSecret == rotated },
		5*time.Second, 10*time.Millisecond, "the rotated secret file is loaded")
}
