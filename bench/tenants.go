package bench

import (
	"bytes"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"regexp"
	"strconv"
)

// Bases of the synthetic account ids: tenant k's account is base + k, so ids
// are numeric strings of the same length as Meta's and never collide across
// account kinds.
const (
	pageBase      = 104_000_000_000_000    // Facebook Page id, 15 digits
	instagramBase = 17_841_400_000_000_000 // Instagram account id, 17 digits
	phoneBase     = 106_000_000_000_000    // WhatsApp phone_number_id, 15 digits
	wabaBase      = 102_000_000_000_000    // WhatsApp Business Account id, 15 digits
	MaxTenants    = 1_000_000              // keeps every id at its fixed length; more is refused
	secretPrefix  = "whsec_"               // Standard Webhooks secret prefix
	secretBytes   = 24                     // random bytes in a default signing secret
	yamlIndent    = "  "                   // indentation of the tenants list
)

// Tenant is one synthetic relay tenant and its Meta accounts.
type Tenant struct {
	ID        string // "t0001", "t0002", ...
	Page      string // Facebook Page id (entry id of Messenger and Page bodies)
	Instagram string // Instagram account id (entry id of Instagram bodies)
	Phone     string // WhatsApp phone_number_id (routing key of WhatsApp bodies)
	WABA      string // WhatsApp Business Account id (entry id of WhatsApp bodies); not a routing account
}

// Accounts returns the routing accounts of t, in the order the tenants file lists them.
func (t Tenant) Accounts() []string { return []string{t.Page, t.Instagram, t.Phone} }

// Tenants returns the deterministic set of n tenants t0001…: tenant k (1-based)
// owns Page 104000000000000+k, Instagram 17841400000000000+k and WhatsApp
// phone_number_id 106000000000000+k. n is clamped to [0, 1000000].
func Tenants(n int) []Tenant {
	n = min(max(n, 0), MaxTenants)
	ts := make([]Tenant, n)
	for i := range ts {
		k := uint64(i + 1)
		ts[i] = Tenant{
			ID:        fmt.Sprintf("t%04d", k),
			Page:      strconv.FormatUint(pageBase+k, 10),
			Instagram: strconv.FormatUint(instagramBase+k, 10),
			Phone:     strconv.FormatUint(phoneBase+k, 10),
			WABA:      strconv.FormatUint(wabaBase+k, 10),
		}
	}
	return ts
}

// Instance is where the relay delivers a tenant's events, as written in the
// tenants file.
type Instance struct {
	Mode          string // "push" when empty
	URL           string
	CAFile        string
	SigningSecret string // NewSigningSecret() when empty
}

// NewSigningSecret returns "whsec_" followed by the base64 of 24 random bytes.
func NewSigningSecret() string {
	var b [secretBytes]byte
	_, _ = rand.Read(b[:]) // crypto/rand.Read never fails (it crashes instead)
	return secretPrefix + base64.StdEncoding.EncodeToString(b[:])
}

var plainScalar = regexp.MustCompile(`^[A-Za-z][A-Za-z0-9_.-]*$`)

// WriteTenantsYAML writes tenants in the relay's tenants file format:
//
//	tenants:
//	  - id: t0001
//	    accounts: ["104000000000001", "17841400000000001", "106000000000001"]
//	    instance: {mode: push, url: "https://…", ca_file: "", signing_secret: "whsec_…"}
//
// instance, which may be nil, supplies each tenant's instance; empty fields get
// the defaults documented on Instance.
func WriteTenantsYAML(w io.Writer, tenants []Tenant, instance func(Tenant) Instance) error {
	var b bytes.Buffer
	b.WriteString("tenants:\n")
	for _, t := range tenants {
		var in Instance
		if instance != nil {
			in = instance(t)
		}
		if in.Mode == "" {
			in.Mode = "push"
		}
		if in.SigningSecret == "" {
			in.SigningSecret = NewSigningSecret()
		}
		b.WriteString(yamlIndent + "- id: ")
		writeScalar(&b, t.ID)
		b.WriteString("\n" + yamlIndent + "  accounts: [")
		for i, a := range t.Accounts() {
			if i > 0 {
				b.WriteString(", ")
			}
			writeQuoted(&b, a)
		}
		b.WriteString("]\n" + yamlIndent + "  instance: {mode: ")
		writeScalar(&b, in.Mode)
		b.WriteString(", url: ")
		writeQuoted(&b, in.URL)
		b.WriteString(", ca_file: ")
		writeQuoted(&b, in.CAFile)
		b.WriteString(", signing_secret: ")
		writeQuoted(&b, in.SigningSecret)
		b.WriteString("}\n")
	}
	_, err := w.Write(b.Bytes())
	return err
}

// writeScalar writes s plain when that is unambiguous YAML, quoted otherwise.
func writeScalar(b *bytes.Buffer, s string) {
	switch s {
	case "true", "false", "null", "yes", "no", "on", "off", "y", "n", "True", "False", "Null", "Yes", "No", "On", "Off":
		writeQuoted(b, s)
		return
	}
	if plainScalar.MatchString(s) {
		b.WriteString(s)
		return
	}
	writeQuoted(b, s)
}

// writeQuoted writes s as a YAML double-quoted scalar. A JSON string is one,
// as long as nothing is escaped the JSON-only way (encoding/json escapes <, >
// and & as \u003c…, which YAML also reads).
func writeQuoted(b *bytes.Buffer, s string) {
	q, _ := json.Marshal(s) // marshalling a string cannot fail
	b.Write(q)
}
