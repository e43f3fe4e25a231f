package bench

import (
	"bytes"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"embed"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"path"
	"slices"
	"strconv"
	"strings"
	"time"
)

// SignatureHeader is the header carrying Meta's body signature.
const SignatureHeader = "X-Hub-Signature-256"

// DefaultBodySize is the body size NewPayloads aims at when none is given.
const DefaultBodySize = 1024

// MaxBodySize bounds PayloadOptions.Size: Meta's largest bodies (WhatsApp) are 3 MB.
const MaxBodySize = 3 << 20

//go:embed templates/*.json
var templateFS embed.FS

// holeKind is what a template placeholder renders as.
type holeKind uint8

const (
	holeNone  holeKind = iota
	holePage           // tenant's Page id
	holePage2          // next tenant's Page id
	holeIG             // tenant's Instagram id
	holePhone          // tenant's WhatsApp phone_number_id
	holeWABA           // tenant's WABA id
	holeID             // unique hex token
	holeNum            // unique decimal token
	holeTsMs           // Unix milliseconds
	holeTsS            // Unix seconds
	holePad            // filler up to the target size
	numHoles
)

var holeNames = map[string]holeKind{
	"page": holePage, "page2": holePage2, "ig": holeIG, "phone": holePhone, "waba": holeWABA,
	"id": holeID, "num": holeNum, "ts_ms": holeTsMs, "ts_s": holeTsS, "pad": holePad,
}

// Widths of the unique tokens: {{id}} is 8 hex run nonce + 16 hex sequence +
// 2 hex occurrence; {{num}} is 6 nonce digits + 12 sequence digits + 1
// occurrence digit.
const (
	idWidth  = 8 + 16 + 2
	numWidth = 6 + 12 + 1
	maxIDs   = 256 // occurrences of {{id}} per template
	maxNums  = 10  // occurrences of {{num}} per template
)

type segment struct {
	lit  []byte   // literal bytes before the hole
	hole holeKind // holeNone for the final literal
	occ  uint8    // occurrence index among holes of this kind
}

type bodyTemplate struct {
	name   string
	segs   []segment
	litLen int
	count  [numHoles]int
}

// TemplateNames returns the names of the embedded templates (file names
// without .json), sorted.
func TemplateNames() []string {
	entries, _ := templateFS.ReadDir("templates") // embedded: cannot fail
	names := make([]string, 0, len(entries))
	for _, e := range entries {
		names = append(names, strings.TrimSuffix(e.Name(), ".json"))
	}
	slices.Sort(names)
	return names
}

func loadTemplate(name string) (*bodyTemplate, error) {
	raw, err := templateFS.ReadFile(path.Join("templates", name+".json"))
	if err != nil {
		return nil, fmt.Errorf("bench: unknown template %q (have %s)", name, strings.Join(TemplateNames(), ", "))
	}
	return parseTemplate(name, bytes.TrimRight(raw, "\n"))
}

// parseTemplate splits raw at its {{placeholders}}.
func parseTemplate(name string, raw []byte) (*bodyTemplate, error) {
	t := &bodyTemplate{name: name}
	for {
		i := bytes.Index(raw, []byte("{{"))
		if i < 0 {
			t.segs = append(t.segs, segment{lit: raw})
			t.litLen += len(raw)
			break
		}
		j := bytes.Index(raw[i:], []byte("}}"))
		if j < 0 {
			return nil, fmt.Errorf("bench: template %s: unterminated placeholder", name)
		}
		key := string(raw[i+2 : i+j])
		h, ok := holeNames[key]
		if !ok {
			return nil, fmt.Errorf("bench: template %s: unknown placeholder {{%s}}", name, key)
		}
		t.segs = append(t.segs, segment{lit: raw[:i], hole: h, occ: uint8(t.count[h])})
		t.litLen += i
		t.count[h]++
		raw = raw[i+j+2:]
	}
	switch {
	case t.count[holePad] != 1:
		return nil, fmt.Errorf("bench: template %s: want exactly one {{pad}}, have %d", name, t.count[holePad])
	case t.count[holeID] > maxIDs || t.count[holeNum] > maxNums:
		return nil, fmt.Errorf("bench: template %s: too many {{id}} or {{num}}", name)
	case t.count[holePage]+t.count[holeIG]+t.count[holePhone] == 0:
		return nil, fmt.Errorf("bench: template %s: no routing account placeholder", name)
	}
	return t, nil
}

// PayloadOptions configures NewPayloads.
type PayloadOptions struct {
	// Tenants whose accounts the bodies are routed to; at least one.
	Tenants []Tenant
	// Templates are template names (see TemplateNames); empty means all.
	// Requests cycle through them in order.
	Templates []string
	// Size is the target body size in bytes (0: DefaultBodySize). A template
	// larger than Size renders unpadded.
	Size int
}

// accountBytes are a tenant's accounts, pre-rendered.
type accountBytes struct {
	page, page2, ig, phone, waba []byte
}

// Payloads renders request bodies. It is immutable and safe for concurrent use.
type Payloads struct {
	templates []*bodyTemplate
	tenants   []Tenant
	accounts  []accountBytes
	size      int
	nonceHex  [8]byte // run nonce, so ids differ between runs too
	nonceNum  [6]byte
	padding   []byte
}

// NewPayloads prepares the templates of opts for rendering.
func NewPayloads(opts PayloadOptions) (*Payloads, error) {
	if len(opts.Tenants) == 0 {
		return nil, errors.New("bench: payloads need at least one tenant")
	}
	if opts.Size == 0 {
		opts.Size = DefaultBodySize
	}
	if opts.Size < 0 || opts.Size > MaxBodySize {
		return nil, fmt.Errorf("bench: body size %d out of range [0, %d]", opts.Size, MaxBodySize)
	}
	names := opts.Templates
	if len(names) == 0 {
		names = TemplateNames()
	}
	p := &Payloads{tenants: slices.Clone(opts.Tenants), size: opts.Size}
	for _, n := range names {
		t, err := loadTemplate(n)
		if err != nil {
			return nil, err
		}
		p.templates = append(p.templates, t)
	}
	p.accounts = make([]accountBytes, len(p.tenants))
	for i, t := range p.tenants {
		next := p.tenants[(i+1)%len(p.tenants)]
		p.accounts[i] = accountBytes{
			page: []byte(t.Page), page2: []byte(next.Page), ig: []byte(t.Instagram),
			phone: []byte(t.Phone), waba: []byte(t.WABA),
		}
	}
	var nonce [4]byte
	_, _ = rand.Read(nonce[:]) // never fails
	n := binary.BigEndian.Uint32(nonce[:])
	hex.Encode(p.nonceHex[:], nonce[:])
	copy(p.nonceNum[:], strconv.FormatUint(100_000+uint64(n)%900_000, 10))
	p.padding = makePadding(opts.Size)
	return p, nil
}

const padText = " Lorem ipsum dolor sit amet consectetur adipiscing elit sed do eiusmod tempor incididunt ut labore et dolore magna aliqua"

func makePadding(n int) []byte {
	b := make([]byte, 0, n+len(padText))
	for len(b) < n {
		b = append(b, padText...)
	}
	return b[:n]
}

// Tenants returns the tenants the bodies are routed to.
func (p *Payloads) Tenants() []Tenant { return p.tenants }

// Tenant returns the index in Tenants() of the tenant whose accounts the body
// for seq is routed to (batch bodies also carry the next tenant's Page).
func (p *Payloads) Tenant(seq uint64) int {
	return int(mix64(seq) % uint64(len(p.tenants)))
}

// Template returns the name of the template the body for seq is rendered from.
func (p *Payloads) Template(seq uint64) string {
	return p.templates[seq%uint64(len(p.templates))].name
}

// mix64 is SplitMix64's finalizer: spreads consecutive sequence numbers
// uniformly over tenants.
func mix64(x uint64) uint64 {
	x += 0x9e3779b97f4a7c15
	x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9
	x = (x ^ (x >> 27)) * 0x94d049bb133111eb
	return x ^ (x >> 31)
}

// AppendBody appends the body of request seq to dst and returns it. Bodies
// for different seq (and different Payloads) carry different message ids;
// timestamps are the current time. It does not allocate when dst has room.
func (p *Payloads) AppendBody(dst []byte, seq uint64) []byte {
	t := p.templates[seq%uint64(len(p.templates))]
	acc := &p.accounts[p.Tenant(seq)]

	now := time.Now()
	var msBuf, sBuf [20]byte
	ms := strconv.AppendInt(msBuf[:0], now.UnixMilli(), 10)
	s := strconv.AppendInt(sBuf[:0], now.Unix(), 10)

	size := t.litLen +
		t.count[holePage]*len(acc.page) + t.count[holePage2]*len(acc.page2) +
		t.count[holeIG]*len(acc.ig) + t.count[holePhone]*len(acc.phone) +
		t.count[holeWABA]*len(acc.waba) + t.count[holeID]*idWidth +
		t.count[holeNum]*numWidth + t.count[holeTsMs]*len(ms) + t.count[holeTsS]*len(s)
	pad := max(p.size-size, 0)
	dst = slices.Grow(dst, size+pad)

	for i := range t.segs {
		sg := &t.segs[i]
		dst = append(dst, sg.lit...)
		switch sg.hole {
		case holePage:
			dst = append(dst, acc.page...)
		case holePage2:
			dst = append(dst, acc.page2...)
		case holeIG:
			dst = append(dst, acc.ig...)
		case holePhone:
			dst = append(dst, acc.phone...)
		case holeWABA:
			dst = append(dst, acc.waba...)
		case holeID:
			dst = append(dst, p.nonceHex[:]...)
			dst = appendHex(dst, seq, 16)
			dst = appendHex(dst, uint64(sg.occ), 2)
		case holeNum:
			dst = append(dst, p.nonceNum[:]...)
			dst = appendDec(dst, seq%1_000_000_000_000, 12)
			dst = append(dst, '0'+sg.occ)
		case holeTsMs:
			dst = append(dst, ms...)
		case holeTsS:
			dst = append(dst, s...)
		case holePad:
			dst = append(dst, p.padding[:pad]...)
		}
	}
	return dst
}

const hexDigits = "0123456789abcdef"

// appendHex appends the low 4*width bits of v as width lowercase hex digits.
func appendHex(dst []byte, v uint64, width int) []byte {
	for i := width - 1; i >= 0; i-- {
		dst = append(dst, hexDigits[(v>>(4*uint(i)))&0xf])
	}
	return dst
}

// appendDec appends v zero-padded to width decimal digits (v < 10^width).
func appendDec(dst []byte, v uint64, width int) []byte {
	var b [20]byte
	for i := width - 1; i >= 0; i-- {
		b[i] = byte('0' + v%10)
		v /= 10
	}
	return append(dst, b[:width]...)
}

// Signer computes X-Hub-Signature-256 values. It reuses its HMAC state, so
// it is not safe for concurrent use: give each goroutine its own.
type Signer struct {
	mac hash.Hash
	sum [sha256.Size]byte
}

// NewSigner returns a Signer keyed with the app secret.
func NewSigner(secret string) *Signer {
	return &Signer{mac: hmac.New(sha256.New, []byte(secret))}
}

// AppendSignature appends "sha256=<hex HMAC-SHA256 of body>" to dst.
func (s *Signer) AppendSignature(dst, body []byte) []byte {
	s.mac.Reset()
	s.mac.Write(body)
	sum := s.mac.Sum(s.sum[:0])
	dst = append(dst, "sha256="...)
	return hex.AppendEncode(dst, sum)
}

// Sign returns the X-Hub-Signature-256 value of body for the app secret.
func Sign(secret string, body []byte) string {
	return string(NewSigner(secret).AppendSignature(nil, body))
}

// VerifySignature reports whether header is the X-Hub-Signature-256 value of
// body for the app secret, comparing in constant time.
func VerifySignature(secret string, body []byte, header string) bool {
	hexSum, ok := strings.CutPrefix(header, "sha256=")
	if !ok {
		return false
	}
	got, err := hex.DecodeString(hexSum)
	if err != nil {
		return false
	}
	mac := hmac.New(sha256.New, []byte(secret))
	mac.Write(body)
	return hmac.Equal(got, mac.Sum(nil))
}
