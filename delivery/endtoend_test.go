package delivery

import (
	"crypto/hmac"
	"crypto/sha256"
	"crypto/tls"
	"encoding/hex"
	"strconv"
	"testing"

	standardwebhooks "github.com/standard-webhooks/standard-webhooks/libraries/go"
	"github.com/stretchr/testify/require"
)

// TestEndToEnd_TwoTenantsSignedAndByteIdentical runs the runtime with the
// instance sink over the Meta fixtures, split one entry per record between
// two tenants in their own partitions, and checks what each tenant's TLS
// instance receives against the delivery contract.
func TestEndToEnd_TwoTenantsSignedAndByteIdentical(t *testing.T) {
	t.Parallel()
	e := newTestEnv(t, 2)
	instA := newInstance(t, e.ca, e.caFile, answer(200))
	instB := newInstance(t, e.ca, e.caFile, answer(204))
	secrets := map[string]string{"acme": newSecret(t), "globex": newSecret(t)}
	e.setTenants(
		tenantConf{ID: "acme", Account: "104857392810345", URL: instA.URL, CAFile: e.caFile, Secret: secrets["acme"]},
		tenantConf{ID: "globex", Account: "209384756102938", URL: instB.URL, CAFile: e.caFile, Secret: secrets["globex"]},
	)
	require.NotEqual(t, e.partition("acme"), e.partition("globex"))

	fixtures := metaFixtures(t)
	require.GreaterOrEqual(t, len(fixtures), 8)
	sent := map[string]testEvent{} // by event id
	var byTenant = map[string][]testEvent{}
	for i, f := range fixtures {
		tid := []string{"acme", "globex"}[i%2]
		ev := testEvent{Tenant: tid, ID: "evt-" + strconv.Itoa(i) + "-" + f.Name, Account: f.Account, Object: f.Object, Value: f.Value}
		sent[ev.ID] = ev
		byTenant[tid] = append(byTenant[tid], ev)
	}
	for tid, evs := range byTenant {
		e.produce(e.partition(tid), evs...)
	}

	e.start("relay.test.e2e", nil, nil)
	instances := map[string]*testInstance{"acme": instA, "globex": instB}
	for tid, inst := range instances {
		inst.waitDelivered(len(byTenant[tid]))
	}

	for tid, inst := range instances {
		var want []string
		for _, ev := range byTenant[tid] {
			want = append(want, ev.ID)
		}
		require.Equal(t, want, inst.delivered(), "tenant %s: every event, in partition order", tid)
		wh, err := standardwebhooks.NewWebhook(secrets[tid])
		require.NoError(t, err)
		for _, h := range inst.allHits() {
			ev, ok := sent[h.ID]
			require.True(t, ok, "unknown webhook-id %q", h.ID)
			require.Equal(t, tid, ev.Tenant, "event %s went to the wrong tenant's instance", h.ID)
			require.Equal(t, "POST", h.Method)
			require.Equal(t, string(ev.Value), string(h.Body), "body must be the record value, bytes identical")
			require.GreaterOrEqual(t, h.TLS, uint16(tls.VersionTLS12))
			require.Equal(t, "relay", h.CN, "the relay's client certificate")
			require.Equal(t, "application/json", h.Header.Get("Content-Type"))

			// X-Hub-Signature-256: hex HMAC-SHA256 keyed with the secret
			// string as configured, "whsec_" included.
			mac := hmac.New(sha256.New, []byte(secrets[tid]))
			mac.Write(h.Body)
			require.Equal(t, "sha256="+hex.EncodeToString(mac.Sum(nil)), h.Header.Get("X-Hub-Signature-256"))

			// Standard Webhooks, checked by the reference library.
			require.Equal(t, ev.ID, h.Header.Get("webhook-id"))
			ts, err := strconv.ParseInt(h.Header.Get("webhook-timestamp"), 10, 64)
			require.NoError(t, err)
			require.InDelta(t, float64(h.At.Unix()), float64(ts), 5, "webhook-timestamp is the Unix seconds of the attempt")
			require.Regexp(t, `^v1,[A-Za-z0-9+/]+=*$`, h.Header.Get("webhook-signature"))
			require.NoError(t, wh.Verify(h.Body, h.Header), "standard webhooks signature of %s", h.ID)

			// And the other tenant's secret does not verify it.
			other := secrets[map[string]string{"acme": "globex", "globex": "acme"}[tid]]
			whOther, err := standardwebhooks.NewWebhook(other)
			require.NoError(t, err)
			require.Error(t, whOther.Verify(h.Body, h.Header))
		}
	}
	require.Empty(t, e.deadLetters("acme"))
	require.Empty(t, e.deadLetters("globex"))
}
