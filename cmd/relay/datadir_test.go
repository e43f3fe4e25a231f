package main

import (
	"fmt"
	"net"
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

// A taken ingress port fails the start at once, also while Kafka cannot be
// reached; the start used to wait for Kafka first, for ever, saying only
// "not ready".
func TestTakenIngressPortFailsTheStartAtOnce(t *testing.T) {
	taken, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	t.Cleanup(func() { taken.Close() })
	e := newRelayEnv(t, relayOptions{Brokers: []string{freeAddr(t)}}) // nothing listens there
	e.Ingress = taken.Addr().String()
	e.writeConfig()
	p := e.spawn()
	require.True(t, p.wait(20*time.Second), "the relay did not exit")
	require.Equal(t, 1, p.state.ExitCode())
	require.Contains(t, p.Stderr(), "ingress.listen")
}
