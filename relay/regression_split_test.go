package relay

import (
	"encoding/json"
	"strings"
	"testing"
)

// Regression test for a bug found in review and since fixed; the
// comment describes the bug it guards against.
//
// TestRegressionSplitDepthResetInScalar: scanner.scalar() skips a non-string,
// non-number "id" (or phone_number_id) with s.value(0), restarting the
// nesting count at 0. A body whose "id" nests 9,999 arrays is 10,002 levels
// deep, beyond encoding/json's limit (json.Valid is false), yet SplitBody
// accepts it and the ingress would write it. FuzzSplitBody's contract
// ("agrees with encoding/json on validity") is broken.
func TestRegressionSplitDepthResetInScalar(t *testing.T) {
	n := 9999
	for _, body := range []string{
		`{"object":"page","entry":[{"id":` + strings.Repeat("[", n) + strings.Repeat("]", n) + `}]}`,
		`{"object":"whatsapp_business_account","entry":[{"changes":[{"value":{"metadata":{"phone_number_id":` +
			strings.Repeat("[", n) + strings.Repeat("]", n) + `}}}]}]}`,
	} {
		if json.Valid([]byte(body)) {
			t.Fatalf("test premise: encoding/json should refuse this depth")
		}
		var b Body
		if err := SplitBody([]byte(body), &b); err == nil {
			t.Errorf("SplitBody accepted a body encoding/json refuses as too deep (%d bytes)", len(body))
		}
	}
}
