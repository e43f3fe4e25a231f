package main

import (
	"fmt"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// Two relays on one embedded data folder would both write its partition
// files. The second one fails at once, naming the first one's pid; once
// the first stopped, the folder is free again.
func TestSecondRelayOnTheSameDataDirFails(t *testing.T) {
	e := newRelayEnv(t, relayOptions{})
	first := e.start()

	second := e.spawn(
		"--set", "ingress.listen="+freeAddr(t),
		"--set", "admin.listen="+freeAddr(t),
		"--set", "kafka.embedded.listen="+freeAddr(t),
	)
	require.True(t, second.wait(20*time.Second), "the second relay did not exit")
	require.NotZero(t, second.state.ExitCode())
	require.Contains(t, second.Stderr(), fmt.Sprintf("is in use by another process (pid %d)", first.pid()))
	require.NoError(t, first.waitReady(e.Admin, 5*time.Second), "the first relay goes on")

	first.stop()
	third := e.start()
	require.NoError(t, third.waitReady(e.Admin, 5*time.Second))
}
