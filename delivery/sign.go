package delivery

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"strconv"
)

// MetaSignature is the X-Hub-Signature-256 value for body: "sha256=" and
// the hex HMAC-SHA256 keyed with the tenant's signing secret string exactly
// as configured, "whsec_" prefix included, so the instance's Meta
// verification code works unchanged.
func MetaSignature(secret string, body []byte) string {
	m := hmac.New(sha256.New, []byte(secret))
	m.Write(body)
	return "sha256=" + hex.EncodeToString(m.Sum(nil))
}

// StandardSignature is the Standard Webhooks webhook-signature value:
// "v1," and the base64 HMAC-SHA256 of "<id>.<timestamp>.<body>", keyed with
// the base64-decoded part of the secret after "whsec_".
func StandardSignature(key []byte, id string, timestamp int64, body []byte) string {
	m := hmac.New(sha256.New, key)
	m.Write([]byte(id))
	m.Write([]byte{'.'})
	m.Write(strconv.AppendInt(nil, timestamp, 10))
	m.Write([]byte{'.'})
	m.Write(body)
	return "v1," + base64.StdEncoding.EncodeToString(m.Sum(nil))
}
