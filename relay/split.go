package relay

import (
	"encoding/binary"
	"encoding/json"
	"math/bits"
)

// maxDepth bounds how deeply nested a body may be; encoding/json uses the
// same limit, so both agree on what is valid.
const maxDepth = 10000

// Entry is one element of a webhook's entry[] array, sliced out of the raw
// body. Its slices alias the body and are valid only as long as it is.
type Entry struct {
	// Raw is the entry's JSON exactly as Meta sent it.
	Raw []byte
	// ID is the entry's "id" (Page, Instagram account or WhatsApp Business
	// Account id), unquoted; empty if the entry has none.
	ID []byte
	// PhoneNumberID is the first changes[].value.metadata.phone_number_id
	// of a WhatsApp entry, unquoted; empty if there is none.
	PhoneNumberID []byte
}

// Body is a webhook body split into its entries.
type Body struct {
	// ObjectRaw is the "object" member's JSON string token, quotes included,
	// exactly as sent; records are rebuilt around it.
	ObjectRaw []byte
	// Object is the unquoted object name ("page", "instagram", ...).
	Object []byte
	// Entries holds one element per entry[], in body order.
	Entries []Entry
}

// Reset empties b for reuse, keeping its capacity.
func (b *Body) Reset() {
	b.ObjectRaw, b.Object = nil, nil
	clear(b.Entries)
	b.Entries = b.Entries[:0]
}

// SplitBody validates data as JSON and splits a Meta webhook body into its
// entries without copying or re-encoding them. It returns ErrBodyEmpty,
// ErrBodyInvalid (not JSON; ErrBodyTooDeep, which is one, for nesting past
// encoding/json's limit) or ErrNotWebhook (JSON, but not a webhook).
func SplitBody(data []byte, b *Body) error {
	b.Reset()
	s := scanner{data: data}
	s.ws()
	if s.i == len(data) {
		return ErrBodyEmpty
	}
	if s.peek() != '{' {
		if !s.value(0) || !s.end() {
			return s.invalid()
		}
		return ErrNotWebhook
	}
	shape := true
	var haveObject, haveEntry bool
	ok := s.object(0, func(key []byte) bool {
		switch string(key) {
		case "object":
			start := s.i
			if s.peek() != '"' {
				shape = false
				return s.value(1)
			}
			content, ok := s.str()
			if !ok {
				return false
			}
			b.ObjectRaw, b.Object, haveObject = data[start:s.i], content, true
			return true
		case "entry":
			if s.peek() != '[' {
				shape = false
				return s.value(1)
			}
			clear(b.Entries)
			b.Entries = b.Entries[:0]
			haveEntry = true
			return s.array(1, func() bool {
				if s.peek() != '{' {
					shape = false
					return s.value(2)
				}
				start := s.i
				var e Entry
				if !s.entry(&e) {
					return false
				}
				e.Raw = data[start:s.i]
				b.Entries = append(b.Entries, e)
				return true
			})
		default:
			return s.value(1)
		}
	})
	if !ok || !s.end() {
		return s.invalid()
	}
	if !shape || !haveObject || !haveEntry {
		return ErrNotWebhook
	}
	return nil
}

// scanner is a validating, allocation-free JSON reader over one byte slice.
// Its methods advance i past what they read and report false on invalid
// JSON. Strings come back unquoted when they hold no escapes; escaped ones
// (rare in ids) are decoded into a fresh slice.
type scanner struct {
	data    []byte
	i       int
	tooDeep bool // what made it report false was nesting past maxDepth
}

// invalid is the error for a body the scanner refused.
func (s *scanner) invalid() error {
	if s.tooDeep {
		return ErrBodyTooDeep
	}
	return ErrBodyInvalid
}

func (s *scanner) peek() byte {
	if s.i < len(s.data) {
		return s.data[s.i]
	}
	return 0
}

func (s *scanner) ws() {
	for s.i < len(s.data) {
		switch s.data[s.i] {
		case ' ', '\t', '\n', '\r':
			s.i++
		default:
			return
		}
	}
}

// end reports whether only whitespace is left.
func (s *scanner) end() bool {
	s.ws()
	return s.i == len(s.data)
}

// entry reads one entry object, picking out its routing keys.
func (s *scanner) entry(e *Entry) bool {
	return s.object(2, func(key []byte) bool {
		switch string(key) {
		case "id":
			v, ok := s.scalar(3)
			if ok {
				e.ID = v
			}
			return ok
		case "changes":
			if s.peek() != '[' {
				return s.value(3)
			}
			return s.array(3, func() bool {
				return s.path(4, e, "value", "metadata", "phone_number_id")
			})
		default:
			return s.value(3)
		}
	})
}

// path reads a value and, when it is an object reachable through keys,
// stores the string at the end of the path as e.PhoneNumberID (first wins).
func (s *scanner) path(depth int, e *Entry, keys ...string) bool {
	if len(keys) == 0 {
		v, ok := s.scalar(depth)
		if ok && len(e.PhoneNumberID) == 0 {
			e.PhoneNumberID = v
		}
		return ok
	}
	if s.peek() != '{' {
		return s.value(depth)
	}
	return s.object(depth, func(key []byte) bool {
		if string(key) == keys[0] {
			return s.path(depth+1, e, keys[1:]...)
		}
		return s.value(depth + 1)
	})
}

// scalar reads any value at the given depth and returns the content of a
// string or the digits of a number; nil for other kinds.
func (s *scanner) scalar(depth int) ([]byte, bool) {
	switch c := s.peek(); {
	case c == '"':
		return s.str()
	case c == '-' || (c >= '0' && c <= '9'):
		start := s.i
		ok := s.number()
		return s.data[start:s.i], ok
	default:
		return nil, s.value(depth)
	}
}

// object reads {...} at s.i, calling member with s.i at each value (after
// the colon and whitespace); member must consume the value.
func (s *scanner) object(depth int, member func(key []byte) bool) bool {
	if depth >= maxDepth {
		s.tooDeep = true
		return false
	}
	s.i++ // '{'
	s.ws()
	if s.peek() == '}' {
		s.i++
		return true
	}
	for {
		if s.peek() != '"' {
			return false
		}
		key, ok := s.str()
		if !ok {
			return false
		}
		s.ws()
		if s.peek() != ':' {
			return false
		}
		s.i++
		s.ws()
		if !member(key) {
			return false
		}
		s.ws()
		switch s.peek() {
		case ',':
			s.i++
			s.ws()
		case '}':
			s.i++
			return true
		default:
			return false
		}
	}
}

// array reads [...] at s.i, calling elem with s.i at each element.
func (s *scanner) array(depth int, elem func() bool) bool {
	if depth >= maxDepth {
		s.tooDeep = true
		return false
	}
	s.i++ // '['
	s.ws()
	if s.peek() == ']' {
		s.i++
		return true
	}
	for {
		if !elem() {
			return false
		}
		s.ws()
		switch s.peek() {
		case ',':
			s.i++
			s.ws()
		case ']':
			s.i++
			return true
		default:
			return false
		}
	}
}

// value skips any JSON value at s.i.
func (s *scanner) value(depth int) bool {
	switch c := s.peek(); {
	case c == '{':
		return s.object(depth, func([]byte) bool { return s.value(depth + 1) })
	case c == '[':
		return s.array(depth, func() bool { return s.value(depth + 1) })
	case c == '"':
		_, ok := s.str()
		return ok
	case c == '-' || (c >= '0' && c <= '9'):
		return s.number()
	case c == 't':
		return s.literal("true")
	case c == 'f':
		return s.literal("false")
	case c == 'n':
		return s.literal("null")
	default:
		return false
	}
}

func (s *scanner) literal(lit string) bool {
	if len(s.data)-s.i < len(lit) || string(s.data[s.i:s.i+len(lit)]) != lit {
		return false
	}
	s.i += len(lit)
	return true
}

// number reads a number per RFC 8259: -?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?
func (s *scanner) number() bool {
	if s.peek() == '-' {
		s.i++
	}
	switch c := s.peek(); {
	case c == '0':
		s.i++
	case c >= '1' && c <= '9':
		s.digits()
	default:
		return false
	}
	if s.peek() == '.' {
		s.i++
		if !s.digits() {
			return false
		}
	}
	if c := s.peek(); c == 'e' || c == 'E' {
		s.i++
		if c := s.peek(); c == '+' || c == '-' {
			s.i++
		}
		if !s.digits() {
			return false
		}
	}
	return true
}

// digits reads one or more decimal digits.
func (s *scanner) digits() bool {
	start := s.i
	for s.i < len(s.data) && s.data[s.i] >= '0' && s.data[s.i] <= '9' {
		s.i++
	}
	return s.i > start
}

// str reads a string at s.i and returns its content: a sub-slice of data
// when it holds no escapes, else a decoded copy.
func (s *scanner) str() ([]byte, bool) {
	s.i++ // opening quote
	start := s.i
	escaped := false
	for s.i < len(s.data) {
		// Skip plain bytes eight at a time: most of a body is string
		// content.
		if len(s.data)-s.i >= 8 {
			m := specialBytes(binary.LittleEndian.Uint64(s.data[s.i:]))
			if m == 0 {
				s.i += 8
				continue
			}
			s.i += bits.TrailingZeros64(m) / 8
		}
		c := s.data[s.i]
		switch {
		case c == '"':
			content := s.data[start:s.i]
			s.i++
			if escaped {
				return unescape(s.data[start-1 : s.i])
			}
			return content, true
		case c == '\\':
			escaped = true
			s.i++
			if s.i >= len(s.data) {
				return nil, false
			}
			switch s.data[s.i] {
			case '"', '\\', '/', 'b', 'f', 'n', 'r', 't':
				s.i++
			case 'u':
				if len(s.data)-s.i < 5 || !isHex4(s.data[s.i+1:s.i+5]) {
					return nil, false
				}
				s.i += 5
			default:
				return nil, false
			}
		case c < 0x20:
			return nil, false
		default:
			s.i++
		}
	}
	return nil, false
}

const (
	swarOnes  = 0x0101010101010101
	swarHighs = 0x8080808080808080
)

// specialBytes returns a mask whose lowest set bit is the high bit of the
// first byte of w (little-endian) that ends a plain run in a JSON string: a
// quote, a backslash or a control character; 0 if there is none. Bits
// above the lowest may be spurious (borrows), so only the lowest is used.
func specialBytes(w uint64) uint64 {
	q := w ^ ('"' * swarOnes)
	b := w ^ ('\\' * swarOnes)
	return ((q-swarOnes) & ^q | (b-swarOnes) & ^b | (w-0x20*swarOnes) & ^w) & swarHighs
}

func isHex4(b []byte) bool {
	for _, c := range b[:4] {
		switch {
		case c >= '0' && c <= '9', c >= 'a' && c <= 'f', c >= 'A' && c <= 'F':
		default:
			return false
		}
	}
	return true
}

// unescape decodes a quoted JSON string that holds escapes. It is off the
// hot path: Meta's ids are digits.
func unescape(quoted []byte) ([]byte, bool) {
	var v string
	if err := json.Unmarshal(quoted, &v); err != nil {
		return nil, false
	}
	return []byte(v), true
}
