package relay

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"math/bits"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

func TestSplitFixtures(t *testing.T) {
	// want: per fixture, each entry's id and WhatsApp phone_number_id.
	want := map[string][][2]string{
		"batch_two_pages.json":                 {{"104857392810345", ""}, {"209384756102938", ""}},
		"instagram_comment.json":               {{"17841405822304914", ""}},
		"instagram_dm.json":                    {{"17841405822304914", ""}},
		"messenger_message.json":               {{"104857392810345", ""}},
		"messenger_postback_and_receipts.json": {{"104857392810345", ""}},
		"page_feed_comment.json":               {{"104857392810345", ""}},
		"permissions_revoked.json":             {{"10210299214172187", ""}},
		"signature_vector_escaped.raw":         {{"104857392810345", ""}},
		"whatsapp_message_and_status.json":     {{"102290129340398", "106540352242922"}},
	}
	for _, f := range loadFixtures(t) {
		t.Run(f.name, func(t *testing.T) {
			var b Body
			require.NoError(t, SplitBody(f.body, &b))
			var doc struct {
				Object string            `json:"object"`
				Entry  []json.RawMessage `json:"entry"`
			}
			require.NoError(t, json.Unmarshal(f.body, &doc))
			require.Equal(t, doc.Object, string(b.Object))
			require.Equal(t, `"`+doc.Object+`"`, string(b.ObjectRaw))
			require.Len(t, b.Entries, len(doc.Entry))
			for i, e := range b.Entries {
				// Sliced, not re-encoded: the exact bytes of the body.
				require.Equal(t, string(doc.Entry[i]), string(e.Raw))
				require.True(t, bytes.Contains(f.body, e.Raw))
				require.Equal(t, want[f.name][i][0], string(e.ID))
				require.Equal(t, want[f.name][i][1], string(e.PhoneNumberID))
			}
		})
	}
}

func TestSplitErrors(t *testing.T) {
	for _, tc := range []struct {
		name string
		body string
		want error
	}{
		{"empty", "", ErrBodyEmpty},
		{"whitespace", " \n\t", ErrBodyEmpty},
		{"not json", "hello", ErrBodyInvalid},
		{"truncated", `{"object":"page","entry":[{"id":"1"}]`, ErrBodyInvalid},
		{"trailing garbage", `{"object":"page","entry":[]} x`, ErrBodyInvalid},
		{"two values", `{"object":"page","entry":[]}{}`, ErrBodyInvalid},
		{"bad escape", `{"object":"pa\ge","entry":[]}`, ErrBodyInvalid},
		{"control char", "{\"object\":\"pa\x01ge\",\"entry\":[]}", ErrBodyInvalid},
		{"bad number", `{"object":"page","entry":[{"id":01}]}`, ErrBodyInvalid},
		{"trailing comma", `{"object":"page","entry":[{"id":"1"},]}`, ErrBodyInvalid},
		{"array", `[1,2]`, ErrNotWebhook},
		{"string", `"page"`, ErrNotWebhook},
		{"no object", `{"entry":[{"id":"1"}]}`, ErrNotWebhook},
		{"no entry", `{"object":"page"}`, ErrNotWebhook},
		{"object not string", `{"object":1,"entry":[]}`, ErrNotWebhook},
		{"entry not array", `{"object":"page","entry":{"id":"1"}}`, ErrNotWebhook},
		{"entry element not object", `{"object":"page","entry":[1]}`, ErrNotWebhook},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var b Body
			require.ErrorIs(t, SplitBody([]byte(tc.body), &b), tc.want)
		})
	}
}

func TestSplitShapes(t *testing.T) {
	for _, tc := range []struct {
		name    string
		body    string
		ids     []string
		phones  []string
		objects string
	}{
		{"empty entry list", `{"object":"page","entry":[]}`, nil, nil, "page"},
		{"numeric id", `{"object":"page","entry":[{"id":12345}]}`, []string{"12345"}, []string{""}, "page"},
		{"no id", `{"object":"page","entry":[{"time":1}]}`, []string{""}, []string{""}, "page"},
		{"escaped id", `{"object":"page","entry":[{"id":"12\u0033"}]}`, []string{"123"}, []string{""}, "page"},
		{"escaped object", `{"object":"pa\u0067e","entry":[]}`, nil, nil, "page"},
		{"first phone wins", `{"object":"whatsapp_business_account","entry":[{"id":"9","changes":[{"value":{"metadata":{"phone_number_id":"1"}}},{"value":{"metadata":{"phone_number_id":"2"}}}]}]}`, []string{"9"}, []string{"1"}, "whatsapp_business_account"},
		{"phone deeper ignored", `{"object":"x","entry":[{"id":"9","changes":[{"value":{"x":{"metadata":{"phone_number_id":"1"}}}}]}]}`, []string{"9"}, []string{""}, "x"},
		{"whitespace everywhere", " { \"entry\" : [ { \"id\" : \"7\" } ] , \"object\" : \"page\" } \n", []string{"7"}, []string{""}, "page"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var b Body
			require.NoError(t, SplitBody([]byte(tc.body), &b))
			require.Equal(t, tc.objects, string(b.Object))
			require.Len(t, b.Entries, len(tc.ids))
			for i, e := range b.Entries {
				require.Equal(t, tc.ids[i], string(e.ID))
				require.Equal(t, tc.phones[i], string(e.PhoneNumberID))
			}
		})
	}
}

func TestSplitDepthLimit(t *testing.T) {
	deep := `{"object":"page","entry":[{"x":` + strings.Repeat("[", 20000) + strings.Repeat("]", 20000) + `}]}`
	var b Body
	err := SplitBody([]byte(deep), &b)
	require.ErrorIs(t, err, ErrBodyInvalid)
	require.False(t, json.Valid([]byte(deep)), "encoding/json agrees")
	// The answer says why: "not valid JSON" alone sent a sender looking
	// for a syntax error.
	require.ErrorIs(t, err, ErrBodyTooDeep)
	require.EqualError(t, err, "body: not valid JSON: nested deeper than 10000 levels")

	// 10,000 levels in all are allowed, as encoding/json allows them; a
	// body invalid otherwise is not called too deep.
	ok := `{"object":"page","entry":[{"x":` + strings.Repeat("[", 9997) + strings.Repeat("]", 9997) + `}]}`
	require.True(t, json.Valid([]byte(ok)))
	require.NoError(t, SplitBody([]byte(ok), &b))
	err = SplitBody([]byte(`{"object":"page","entry":[{"x":[[[}]}`), &b)
	require.ErrorIs(t, err, ErrBodyInvalid)
	require.NotErrorIs(t, err, ErrBodyTooDeep)
}

func TestSplitAllocatesNothing(t *testing.T) {
	if raceEnabled {
		t.Skip("allocation counts are checked without -race: .ci/run runs this test again without it")
	}
	body := fixtureByName(t, "whatsapp_message_and_status.json").body
	var b Body
	require.NoError(t, SplitBody(body, &b)) // grow Entries once
	allocs := testing.AllocsPerRun(100, func() {
		if err := SplitBody(body, &b); err != nil {
			t.Fatal(err)
		}
	})
	require.Zero(t, allocs)
}

// specialBytes is checked against a byte loop for every byte value at every
// position of a word, behind plain bytes and in front of other specials.
func TestSpecialBytesFindsTheFirstSpecialByte(t *testing.T) {
	special := func(c byte) bool { return c == '"' || c == '\\' || c < 0x20 }
	for _, fill := range []byte{'a', 0x80, 0xff, '"'} {
		for p := range 8 {
			for v := range 256 {
				var word [8]byte
				for i := range word {
					word[i] = 'a'
					if i > p {
						word[i] = fill
					}
				}
				word[p] = byte(v)
				want := -1
				for i, c := range word {
					if special(c) {
						want = i
						break
					}
				}
				m := specialBytes(binary.LittleEndian.Uint64(word[:]))
				got := -1
				if m != 0 {
					got = bits.TrailingZeros64(m) / 8
				}
				if got != want {
					t.Fatalf("word %q: first special byte at %d, want %d", word, got, want)
				}
			}
		}
	}
}
