package bench

import (
	"bytes"
	"context"
	"encoding/json"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/segmentio/kafka-go"
	"github.com/stretchr/testify/require"
	"github.com/twmb/franz-go/pkg/kfake"
)

const baselineTopic = "webhooks"

func newCluster(t *testing.T) []string {
	t.Helper()
	c, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.SeedTopics(1, baselineTopic))
	require.NoError(t, err)
	t.Cleanup(c.Close)
	return c.ListenAddrs()
}

func postSigned(t *testing.T, client *http.Client, url, secret string, body []byte) int {
	t.Helper()
	req, err := http.NewRequest(http.MethodPost, url, bytes.NewReader(body))
	require.NoError(t, err)
	req.Header.Set(SignatureHeader, Sign(secret, body))
	resp, err := client.Do(req)
	require.NoError(t, err)
	require.NoError(t, resp.Body.Close())
	return resp.StatusCode
}

func TestBaseline(t *testing.T) {
	brokers := newCluster(t)
	addr, stop := runServer(t, func(ctx context.Context, ln net.Listener) error {
		return ServeBaselineListener(ctx, ln, brokers, baselineTopic, testSecret)
	})
	url := "http://" + addr + "/webhooks/meta"
	client := &http.Client{Timeout: 10 * time.Second}
	t.Cleanup(client.CloseIdleConnections)

	body, err := os.ReadFile(filepath.Join(fixtureDir, "batch_two_pages.json"))
	require.NoError(t, err)
	require.Equal(t, http.StatusOK, postSigned(t, client, url, testSecret, body))
	require.Equal(t, http.StatusForbidden, postSigned(t, client, url, "wrong secret", body))
	require.Equal(t, http.StatusBadRequest, postSigned(t, client, url, testSecret, []byte(`{"entry":[`)))
	resp, err := client.Get(url)
	require.NoError(t, err)
	require.NoError(t, resp.Body.Close())
	require.Equal(t, http.StatusMethodNotAllowed, resp.StatusCode)

	// One message per entry, keyed by the entry id, the entry as value.
	r := kafka.NewReader(kafka.ReaderConfig{
		Brokers: brokers, Topic: baselineTopic, Partition: 0, MaxWait: 100 * time.Millisecond,
	})
	t.Cleanup(func() { r.Close() })
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	var keys []string
	for range 2 {
		m, err := r.ReadMessage(ctx)
		require.NoError(t, err)
		keys = append(keys, string(m.Key))
		require.True(t, json.Valid(m.Value))
		var e struct {
			ID string `json:"id"`
		}
		require.NoError(t, json.Unmarshal(m.Value, &e))
		require.Equal(t, string(m.Key), e.ID)
	}
	slices.Sort(keys)
	require.Equal(t, []string{"104857392810345", "209384756102938"}, keys)

	require.NoError(t, stop())
}

// A failed Kafka write answers 503.
func TestBaselineWriteError(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	dead := ln.Addr().String()
	require.NoError(t, ln.Close()) // nothing listens there

	w := NewBaselineWriter([]string{dead}, baselineTopic)
	w.MaxAttempts = 1
	t.Cleanup(func() {
		w.Close()
		w.Transport.(*kafka.Transport).CloseIdleConnections()
	})
	srv := httptest.NewServer(BaselineHandler(w, testSecret))
	t.Cleanup(srv.Close)

	body, err := os.ReadFile(filepath.Join(fixtureDir, "messenger_message.json"))
	require.NoError(t, err)
	client := &http.Client{Timeout: 10 * time.Second}
	t.Cleanup(client.CloseIdleConnections)
	require.Equal(t, http.StatusServiceUnavailable, postSigned(t, client, srv.URL, testSecret, body))
}

// The generator drives the baseline end to end.
func TestBaselineUnderLoad(t *testing.T) {
	brokers := newCluster(t)
	addr, _ := runServer(t, func(ctx context.Context, ln net.Listener) error {
		return ServeBaselineListener(ctx, ln, brokers, baselineTopic, testSecret)
	})
	res, err := Run(context.Background(), Config{
		URL: "http://" + addr + "/webhooks/meta", Concurrency: 8, Duration: 500 * time.Millisecond, AppSecret: testSecret,
	})
	require.NoError(t, err)
	require.Equal(t, []string{"200"}, keys(res.Status))
	require.Positive(t, res.Requests)
	t.Logf("baseline on kfake: %.0f req/s, %+v", res.RequestsPerSec, res.Latency)
}

func TestServeBaselineErrors(t *testing.T) {
	require.Error(t, ServeBaseline(context.Background(), "127.0.0.1:0", nil, baselineTopic, testSecret))
	require.Error(t, ServeBaseline(context.Background(), "127.0.0.1:-1", []string{"x:1"}, baselineTopic, testSecret))
}
