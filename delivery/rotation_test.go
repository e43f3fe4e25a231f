package delivery

import (
	"strings"
	"testing"

	standardwebhooks "github.com/standard-webhooks/standard-webhooks/libraries/go"
	"github.com/stretchr/testify/require"
)

// A signing secret rotation: while the tenant has a previous_signing_secret,
// webhook-signature carries a signature by each secret, so that an
// instance verifies deliveries with the old secret or the new one (checked
// by the Standard Webhooks reference library); X-Hub-Signature-256 is the
// new secret's. Once the previous secret is removed, only the new one
// verifies.
func TestSecretRotationSignsWithBothSecrets(t *testing.T) {
	e := newTestEnv(t, 1)
	inst := newInstance(t, e.ca, e.caFile, answer(200))
	previous, current := newSecret(t), newSecret(t)
	conf := tenantConf{ID: "acme", Account: "1", URL: inst.URL, CAFile: e.caFile, Secret: current, PreviousSecret: previous}
	e.setTenants(conf)
	evs := simpleEvents("acme", "1", "acme", 2)
	p := e.partition("acme")
	e.produce(p, evs[0])
	e.start("relay.test.rotation", nil, nil)
	inst.waitDelivered(1)

	verifies := func(secret string, h hit) bool {
		wh, err := standardwebhooks.NewWebhook(secret)
		require.NoError(t, err)
		return wh.Verify(h.Body, h.Header) == nil
	}
	during := inst.allHits()[0]
	require.Len(t, strings.Fields(during.Header.Get("webhook-signature")), 2)
	require.True(t, verifies(current, during), "the new secret verifies")
	require.True(t, verifies(previous, during), "the old secret verifies")
	require.False(t, verifies(newSecret(t), during), "another secret does not")
	require.Equal(t, MetaSignature(current, during.Body), during.Header.Get("X-Hub-Signature-256"))

	conf.PreviousSecret = ""
	e.setTenants(conf)
	e.produce(p, evs[1])
	inst.waitDelivered(2)
	after := inst.allHits()[1]
	require.Len(t, strings.Fields(after.Header.Get("webhook-signature")), 1)
	require.True(t, verifies(current, after))
	require.False(t, verifies(previous, after), "the rotation is over")
}
