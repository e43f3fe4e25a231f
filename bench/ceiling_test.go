package bench

import (
	"bytes"
	"context"
	"net"
	"net/http"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

func TestCeiling(t *testing.T) {
	addr, stop := runServer(t, ServeCeilingListener)
	client := &http.Client{Timeout: 5 * time.Second}
	t.Cleanup(client.CloseIdleConnections)

	body := bytes.Repeat([]byte("x"), 64<<10)
	resp, err := client.Post("http://"+addr+"/webhooks/meta", "application/json", bytes.NewReader(body))
	require.NoError(t, err)
	require.Equal(t, http.StatusOK, resp.StatusCode)
	require.Zero(t, resp.ContentLength)
	require.NoError(t, resp.Body.Close())

	resp, err = client.Get("http://" + addr + "/anything")
	require.NoError(t, err)
	require.Equal(t, http.StatusOK, resp.StatusCode)
	require.NoError(t, resp.Body.Close())

	require.NoError(t, stop())
	_, err = net.DialTimeout("tcp", addr, time.Second)
	require.Error(t, err, "port closed after shutdown")
}

func TestServeCeilingAddr(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	// Cancelled before it starts: listens, shuts down, returns nil.
	require.NoError(t, ServeCeiling(ctx, "127.0.0.1:0"))
	require.Error(t, ServeCeiling(context.Background(), "127.0.0.1:-1"))
}
