// Package verify does what a postal inspector does with a printed stamp:
// read the DataMatrix off the label image and check the indicium against the
// keys the hub publishes. It reads with gozxing in-process, and with
// zxing-cpp's ZXingReader as an independent reader.
package verify

import (
	"bufio"
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/sha256"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"image"
	"image/png"
	"io"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"time"

	"github.com/makiuchi-d/gozxing"
	"github.com/makiuchi-d/gozxing/datamatrix"

	"github.com/frank-postage/frank/protocol"
)

// ReadPNG reads the DataMatrix of a label PNG with gozxing. Render puts the
// code in the square at the left of the label; gozxing's detector loses it
// beside the text, so it is given that square.
func ReadPNG(path string) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("verify: %w", err)
	}
	defer f.Close()
	img, err := png.Decode(f)
	if err != nil {
		return nil, fmt.Errorf("verify: %s: %w", path, err)
	}
	return ReadImage(img)
}

// ReadImage reads the DataMatrix in the left square of a label image.
func ReadImage(img image.Image) ([]byte, error) {
	b := img.Bounds()
	sq := image.Rect(b.Min.X, b.Min.Y, b.Min.X+b.Dy(), b.Max.Y)
	if s, ok := img.(interface {
		SubImage(image.Rectangle) image.Image
	}); ok {
		img = s.SubImage(sq)
	}
	bmp, err := gozxing.NewBinaryBitmapFromImage(img)
	if err != nil {
		return nil, fmt.Errorf("verify: %w", err)
	}
	res, err := datamatrix.NewDataMatrixReader().Decode(bmp, map[gozxing.DecodeHintType]any{gozxing.DecodeHintType_PURE_BARCODE: true})
	if err != nil {
		return nil, fmt.Errorf("verify: gozxing: %w", err)
	}
	return []byte(res.GetText()), nil
}

// ZXingReader is the zxing-cpp command-line reader (Debian zxing-cpp-tools).
const ZXingReader = "ZXingReader"

// ErrNoZXing means ZXingReader is not installed.
var ErrNoZXing = errors.New("verify: ZXingReader not found; install Debian package zxing-cpp-tools (make test does, as root)")

// ReadZXing reads every DataMatrix in an image file with ZXingReader -bytes.
func ReadZXing(ctx context.Context, path string) ([]byte, error) {
	bin, err := exec.LookPath(ZXingReader)
	if err != nil {
		return nil, ErrNoZXing
	}
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	var stderr bytes.Buffer
	cmd := exec.CommandContext(ctx, bin, "-bytes", "-format", "DataMatrix", path)
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return nil, fmt.Errorf("verify: ZXingReader %s: %w: %s", path, err, stderr.String())
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("verify: ZXingReader found no DataMatrix in %s", path)
	}
	return out, nil
}

// Certificate is one entry of the hub's /api/v1/certificates.
type Certificate struct {
	Serial       uint32 `json:"serial"`
	Algorithm    int    `json:"algorithm"`
	PublicKeyPEM string `json:"public_key_pem"`
	// CertificatePEM is the postal authority's X.509 certificate for the
	// key: its serial number is Serial, its organization the vendor.
	CertificatePEM string `json:"certificate_pem"`
	// Compromised is when the vendor declared the key compromised.
	Compromised *time.Time `json:"compromised,omitempty"`
	// Retired is when another key took over from this one.
	Retired *time.Time `json:"retired,omitempty"`
}

// Key is a published indicium key. A key the authority certified carries
// its vendor and validity, which a stamp must match.
type Key struct {
	Public    *ecdsa.PublicKey
	Certified bool // by the authority's signature, not on the hub's word
	// Uncertified: checked against the authority, the key came with no
	// certificate. It verifies nothing; Public is nil.
	Uncertified bool
	Vendor      string
	NotBefore   time.Time
	NotAfter    time.Time
	// Compromised is when the key was compromised: a stamp it signed dated
	// protocol.CompromiseDate of it or later is not postage.
	Compromised *time.Time
	// Retired is when another key took over: hubs follow within seconds,
	// so a stamp it signed dated more than a day after (the date is the
	// hub's local one) came from a copy of the key, not from a hub.
	Retired *time.Time
}

// CompromisedSigner says whether in was signed by a compromised key and
// dated on or after the compromise's day, and since when; Verify refuses
// such a stamp itself (a *CompromisedError). The day is
// protocol.CompromiseDate's, not the UTC one: the stamp's date is its
// hub's local one, which west of UTC is a day behind in the evening.
func (k Keys) CompromisedSigner(in *protocol.Indicium) (time.Time, bool) {
	key, ok := k[in.CertSerial]
	if !ok || key.Compromised == nil {
		return time.Time{}, false
	}
	return *key.Compromised, in.Date >= protocol.CompromiseDate(*key.Compromised)
}

// Keys maps certificate serials to keys.
type Keys map[uint32]Key

// FetchCertificates gets the published certificates from a hub's base URL.
func FetchCertificates(ctx context.Context, hubURL string, client *http.Client) ([]Certificate, error) {
	b, err := get(ctx, client, hubURL+"/api/v1/certificates")
	if err != nil {
		return nil, fmt.Errorf("verify: certificates: %w", err)
	}
	return ParseCertificates(b)
}

// maxDocument is the largest hub document read: a void list longer than
// that comes in pages.
const maxDocument = 16 << 20

// get reads a hub document.
func get(ctx context.Context, client *http.Client, url string) ([]byte, error) {
	b, _, err := getWithHeader(ctx, client, url)
	return b, err
}

// getWithHeader reads a hub document of up to maxDocument, and its header.
func getWithHeader(ctx context.Context, client *http.Client, url string) ([]byte, http.Header, error) {
	if client == nil {
		client = http.DefaultClient
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return nil, nil, err
	}
	resp, err := client.Do(req)
	if err != nil {
		return nil, nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, nil, errors.New(resp.Status)
	}
	b, err := io.ReadAll(io.LimitReader(resp.Body, maxDocument+1))
	if err == nil && len(b) > maxDocument {
		err = fmt.Errorf("%s: over %d MiB", url, maxDocument>>20)
	}
	return b, resp.Header, err
}

// Void is an entry of a vendor's void list (/api/v1/voided): an indicium
// refunded, voided or spoiled, which is not postage.
type Void struct {
	Meter  string `json:"meter"`
	Label  string `json:"label"`
	AR     int64  `json:"ar"`
	Reason string `json:"reason"`
}

// VoidList finds an indicium among the voided ones.
type VoidList map[string]string // meter/label/ar -> reason

// VoidPageLimit is the page size the verifier asks a hub's void list
// for: the most a hub serves at once.
const VoidPageLimit = 10_000

// FetchVoidList gets the void list from a hub's base URL, every page of it.
func FetchVoidList(ctx context.Context, hubURL string, client *http.Client) (VoidList, error) {
	out := VoidList{}
	err := eachVoidPage(ctx, hubURL, client, func(vs []Void) error {
		for _, v := range vs {
			out[fmt.Sprintf("%s/%s/%d", v.Meter, v.Label, v.AR)] = v.Reason
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}

// FetchVoidFile gets the void list, every page of it, as one JSON array
// such as /api/v1/voided serves whole, to save for verifying offline.
func FetchVoidFile(ctx context.Context, hubURL string, client *http.Client) ([]byte, error) {
	var b bytes.Buffer
	if err := WriteVoidFile(ctx, hubURL, client, &b); err != nil {
		return nil, err
	}
	return b.Bytes(), nil
}

// WriteVoidFile writes the void list to w as FetchVoidFile returns it,
// holding one page at a time. On an error w holds part of the list: write
// to a temporary file and rename it once this returns nil.
func WriteVoidFile(ctx context.Context, hubURL string, client *http.Client, w io.Writer) error {
	bw := bufio.NewWriter(w)
	bw.WriteString("[")
	n := 0
	err := eachVoidPage(ctx, hubURL, client, func(vs []Void) error {
		for _, v := range vs {
			b, err := json.Marshal(v)
			if err != nil {
				return err
			}
			if n > 0 {
				bw.WriteString(",")
			}
			bw.WriteString("\n")
			bw.Write(b)
			n++
		}
		return nil
	})
	if err != nil {
		return err
	}
	bw.WriteString("\n]\n")
	if err := bw.Flush(); err != nil {
		return fmt.Errorf("verify: void list: %w", err)
	}
	return nil
}

// eachVoidPage hands fn each page of the hub's void list in turn. It asks
// for pages (limit) and follows each page's Link rel="next" to the end; a
// hub that does not page answers the whole list at once, with no Link.
// The list is only whole at the end: fn must not decide on a stamp.
func eachVoidPage(ctx context.Context, hubURL string, client *http.Client, fn func([]Void) error) error {
	base, err := url.Parse(hubURL + "/api/v1/voided")
	if err != nil {
		return fmt.Errorf("verify: void list: %w", err)
	}
	page := *base
	page.RawQuery = url.Values{"limit": {strconv.Itoa(VoidPageLimit)}}.Encode()
	seen := map[string]bool{}
	for next := &page; next != nil; {
		at := next.String()
		if seen[at] {
			return fmt.Errorf("verify: void list: the hub's next page is one already read: %s", at)
		}
		seen[at] = true
		b, h, err := getWithHeader(ctx, client, at)
		if err != nil {
			return fmt.Errorf("verify: void list: %w", err)
		}
		var vs []Void
		if err := json.Unmarshal(b, &vs); err != nil {
			return fmt.Errorf("verify: void list: %s: %w", at, err)
		}
		if err := fn(vs); err != nil {
			return fmt.Errorf("verify: void list: %w", err)
		}
		if next, err = nextPage(next, h); err != nil {
			return fmt.Errorf("verify: void list: %s: %w", at, err)
		}
	}
	return nil
}

// nextPage is the page a response's Link rel="next" names, resolved
// against the page at; nil if none. It must be on the same server.
func nextPage(at *url.URL, h http.Header) (*url.URL, error) {
	ref, ok := linkNext(h)
	if !ok {
		return nil, nil
	}
	u, err := at.Parse(ref)
	if err != nil {
		return nil, fmt.Errorf("link rel=next: %w", err)
	}
	if u.Scheme != at.Scheme || u.Host != at.Host {
		return nil, fmt.Errorf("link rel=next: %s is on another server", u)
	}
	return u, nil
}

// linkNext finds the target of rel="next" in Link headers (RFC 8288):
// `<target>; rel="next"`, among others separated by commas.
func linkNext(h http.Header) (string, bool) {
	for _, v := range h.Values("Link") {
		for {
			v = strings.TrimLeft(v, " \t,")
			if !strings.HasPrefix(v, "<") {
				break
			}
			end := strings.IndexByte(v, '>')
			if end < 0 {
				break
			}
			target := v[1:end]
			v = v[end+1:]
			// Parameters up to the next comma outside quotes.
			quoted, cut := false, len(v)
			for i := 0; i < len(v); i++ {
				if v[i] == '"' {
					quoted = !quoted
				} else if v[i] == ',' && !quoted {
					cut = i
					break
				}
			}
			params := v[:cut]
			v = v[cut:]
			for p := range strings.SplitSeq(params, ";") {
				name, val, _ := strings.Cut(p, "=")
				if !strings.EqualFold(strings.TrimSpace(name), "rel") {
					continue
				}
				for _, rel := range strings.Fields(strings.Trim(strings.TrimSpace(val), `"`)) {
					if strings.EqualFold(rel, "next") {
						return target, true
					}
				}
			}
		}
	}
	return "", false
}

// ParseVoidList reads a void list as /api/v1/voided serves it, e.g. from a
// file saved for verifying offline.
func ParseVoidList(b []byte) (VoidList, error) {
	var vs []Void
	if err := json.Unmarshal(b, &vs); err != nil {
		return nil, fmt.Errorf("verify: void list: %w", err)
	}
	out := VoidList{}
	for _, v := range vs {
		out[fmt.Sprintf("%s/%s/%d", v.Meter, v.Label, v.AR)] = v.Reason
	}
	return out, nil
}

// Voided says whether in is on the list, and why.
func (vl VoidList) Voided(in *protocol.Indicium) (string, bool) {
	why, ok := vl[fmt.Sprintf("%s/%s/%d", in.MeterNumber(), in.Label, in.AR)]
	return why, ok
}

// Ledger statuses of /api/v1/indicia/{meter}/{label}.
const (
	LedgerValid   = "valid"   // issued or printed, not voided
	LedgerVoided  = "voided"  // voided, refunded or spoiled
	LedgerUnknown = "unknown" // the vendor never made it: a forgery or another vendor's
)

// LedgerStatus is the hub's answer at /api/v1/indicia/{meter}/{label}. The
// hub matches on meter and label only, not the ascending register, so a
// voided stamp whose label was sold again reads valid: check the void list
// too, which carries the register.
type LedgerStatus struct {
	Meter  string `json:"meter"`
	Label  string `json:"label"`
	Status string `json:"status"`
	Reason string `json:"reason"`
}

// FetchLedgerStatus asks a hub's ledger whether it made in.
func FetchLedgerStatus(ctx context.Context, hubURL string, client *http.Client, in *protocol.Indicium) (LedgerStatus, error) {
	meter, label := in.MeterNumber(), in.Label.String()
	// The stamp's ar names it among the stamps its label ever carried.
	b, err := get(ctx, client, hubURL+"/api/v1/indicia/"+url.PathEscape(meter)+"/"+url.PathEscape(label)+"?ar="+strconv.FormatUint(uint64(in.AR), 10))
	if err != nil {
		return LedgerStatus{}, fmt.Errorf("verify: ledger status of %s %s: %w", meter, label, err)
	}
	var st LedgerStatus
	if err := json.Unmarshal(b, &st); err != nil {
		return LedgerStatus{}, fmt.Errorf("verify: ledger status of %s %s: %w", meter, label, err)
	}
	switch {
	case st.Meter != meter || !strings.EqualFold(st.Label, label):
		return LedgerStatus{}, fmt.Errorf("verify: ledger status of %s %s: the hub answered for %s %s", meter, label, st.Meter, st.Label)
	case st.Status != LedgerValid && st.Status != LedgerVoided && st.Status != LedgerUnknown:
		return LedgerStatus{}, fmt.Errorf("verify: ledger status of %s %s: status %q", meter, label, st.Status)
	}
	return st, nil
}

// ParseCertificates reads certificates as /api/v1/certificates serves them,
// e.g. from a file saved for verifying offline.
func ParseCertificates(b []byte) ([]Certificate, error) {
	var certs []Certificate
	if err := json.Unmarshal(b, &certs); err != nil {
		return nil, fmt.Errorf("verify: certificates: %w", err)
	}
	return certs, nil
}

// FetchKeys gets the published keys from a hub's base URL, on the hub's word.
func FetchKeys(ctx context.Context, hubURL string, client *http.Client) (Keys, error) {
	certs, err := FetchCertificates(ctx, hubURL, client)
	if err != nil {
		return nil, err
	}
	return KeysOf(certs, nil)
}

// ErrUncertified means a stamp names a key that the postal authority did
// not certify, while the authority's key was given.
var ErrUncertified = errors.New("verify: key not certified by the postal authority")

// KeysOf makes the keys of certs. With the authority's public key, every
// certificate must carry the authority's signature over its key, serial,
// vendor and validity, and the key it certifies is the one used; a key
// published with no certificate is kept as Uncertified, so it fails only
// the stamps that name it (the authority may not have certified a key
// yet). Without the authority's key, the hub's word for each key is taken.
func KeysOf(certs []Certificate, authority *ecdsa.PublicKey) (Keys, error) {
	keys := Keys{}
	for _, c := range certs {
		if authority != nil && strings.TrimSpace(c.CertificatePEM) == "" {
			if _, dup := keys[c.Serial]; !dup { // never hides a certified one
				keys[c.Serial] = Key{Uncertified: true}
			}
			continue
		}
		pub, err := parsePublicKey([]byte(c.PublicKeyPEM))
		if err != nil {
			return nil, fmt.Errorf("verify: certificate %d: %w", c.Serial, err)
		}
		k := Key{Public: pub}
		if authority != nil {
			if k, err = certified(c, authority); err != nil {
				return nil, fmt.Errorf("verify: certificate %d: %w", c.Serial, err)
			}
			if !k.Public.Equal(pub) {
				return nil, fmt.Errorf("verify: certificate %d: the published key is not the one the authority certified", c.Serial)
			}
		}
		k.Compromised, k.Retired = c.Compromised, c.Retired
		keys[c.Serial] = k
	}
	return keys, nil
}

// certified checks the authority's signature on c's certificate.
func certified(c Certificate, authority *ecdsa.PublicKey) (Key, error) {
	blk, _ := pem.Decode([]byte(c.CertificatePEM))
	if blk == nil || blk.Type != "CERTIFICATE" {
		return Key{}, errors.New("no certificate from the postal authority")
	}
	x, err := x509.ParseCertificate(blk.Bytes)
	if err != nil {
		return Key{}, err
	}
	if x.SignatureAlgorithm != x509.ECDSAWithSHA256 {
		return Key{}, fmt.Errorf("signed with %v, want ECDSA with SHA-256", x.SignatureAlgorithm)
	}
	sum := sha256.Sum256(x.RawTBSCertificate)
	if !ecdsa.VerifyASN1(authority, sum[:], x.Signature) {
		return Key{}, errors.New("not signed by the postal authority")
	}
	if !x.SerialNumber.IsUint64() || x.SerialNumber.Uint64() != uint64(c.Serial) {
		return Key{}, fmt.Errorf("the authority certified serial %s", x.SerialNumber)
	}
	pub, ok := x.PublicKey.(*ecdsa.PublicKey)
	if !ok || len(x.Subject.Organization) != 1 {
		return Key{}, errors.New("not an indicium key certificate")
	}
	return Key{Public: pub, Certified: true, Vendor: x.Subject.Organization[0], NotBefore: x.NotBefore, NotAfter: x.NotAfter}, nil
}

// ParseAuthority reads the postal authority's public key from PEM: a
// PUBLIC KEY, or its CERTIFICATE.
func ParseAuthority(b []byte) (*ecdsa.PublicKey, error) {
	blk, _ := pem.Decode(b)
	if blk == nil {
		return nil, errors.New("verify: authority key: not PEM")
	}
	if blk.Type == "CERTIFICATE" {
		c, err := x509.ParseCertificate(blk.Bytes)
		if err != nil {
			return nil, fmt.Errorf("verify: authority key: %w", err)
		}
		k, ok := c.PublicKey.(*ecdsa.PublicKey)
		if !ok {
			return nil, errors.New("verify: authority key: not ECDSA")
		}
		return k, nil
	}
	k, err := parsePublicKey(b)
	if err != nil {
		return nil, fmt.Errorf("verify: authority key: %w", err)
	}
	return k, nil
}

func parsePublicKey(b []byte) (*ecdsa.PublicKey, error) {
	blk, _ := pem.Decode(b)
	if blk == nil || blk.Type != "PUBLIC KEY" {
		return nil, errors.New("not a PEM PUBLIC KEY")
	}
	k, err := x509.ParsePKIXPublicKey(blk.Bytes)
	if err != nil {
		return nil, err
	}
	ec, ok := k.(*ecdsa.PublicKey)
	if !ok {
		return nil, errors.New("not an ECDSA key")
	}
	return ec, nil
}

// ErrCompromised is a stamp signed by a compromised key dated on or after
// the compromise date; Verify's error is then a *CompromisedError.
var ErrCompromised = errors.New("verify: signed by a compromised key")

// CompromisedError is Verify's refusal of a stamp whose key was
// compromised: the signature holds, but the stamp is not postage.
type CompromisedError struct {
	Indicium *protocol.Indicium // the stamp, decoded and its signature checked
	Since    time.Time          // when the key was compromised
}

func (e *CompromisedError) Error() string {
	return fmt.Sprintf("verify: dated %s, signed by certificate %d, compromised at %s: stamps it signed dated %s or later are void",
		e.Indicium.Date, e.Indicium.CertSerial, e.Since.UTC().Format(time.RFC3339), protocol.CompromiseDate(e.Since))
}

// Is makes errors.Is(err, ErrCompromised) hold.
func (e *CompromisedError) Is(target error) bool { return target == ErrCompromised }

// Verify checks an indicium against the key its certificate serial names,
// with a certified key its vendor and that its date lies within the
// certificate's validity, and refuses it (a *CompromisedError) when its
// key was compromised by its date. It decodes the bytes twice, with the
// protocol package and with Decode (from protocol/README.md alone), and
// checks the signature with each: a stamp the two read differently is
// refused with ErrDecodeMismatch.
func (k Keys) Verify(b []byte) (*protocol.Indicium, error) {
	in, d, err := decodeBoth(b)
	if err != nil {
		return nil, err
	}
	key, ok := k[in.CertSerial]
	if !ok {
		return nil, fmt.Errorf("verify: no published key for certificate %d: %w", in.CertSerial, protocol.ErrIndiciumSignature)
	}
	if key.Uncertified || key.Public == nil {
		return nil, fmt.Errorf("%w: certificate %d: %w", ErrUncertified, in.CertSerial, protocol.ErrIndiciumSignature)
	}
	mine := d.VerifySignature(b, key.Public)
	if in, err = protocol.VerifyIndicium(b, key.Public); (err == nil) != mine {
		return nil, fmt.Errorf("%w: the signature verifies by the README: %v; by protocol: %v", ErrDecodeMismatch, mine, err)
	}
	if err != nil {
		return nil, err
	}
	if r := key.Retired; r != nil && in.Date > protocol.DateOf(r.UTC().AddDate(0, 0, 1)) {
		return nil, fmt.Errorf("verify: dated %s, after certificate %d was retired on %s: %w", in.Date, in.CertSerial,
			r.UTC().Format(time.DateOnly), protocol.ErrIndiciumSignature)
	}
	if key.Certified {
		if in.Vendor != key.Vendor {
			return nil, fmt.Errorf("verify: vendor %s, but certificate %d is %s's: %w", in.Vendor, in.CertSerial, key.Vendor, protocol.ErrIndiciumSignature)
		}
		// A day's slack each side: the date is the hub's local one.
		if d := in.Date; d < protocol.DateOf(key.NotBefore.UTC().AddDate(0, 0, -1)) || d > protocol.DateOf(key.NotAfter.UTC().AddDate(0, 0, 1)) {
			return nil, fmt.Errorf("verify: dated %s, outside certificate %d's validity %s to %s: %w", d, in.CertSerial,
				key.NotBefore.Format(time.DateOnly), key.NotAfter.Format(time.DateOnly), protocol.ErrIndiciumSignature)
		}
	}
	if since, bad := k.CompromisedSigner(in); bad {
		return nil, &CompromisedError{Indicium: in, Since: since}
	}
	return in, nil
}
