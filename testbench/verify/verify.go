// Package verify does what a postal inspector does with a printed stamp:
// read the DataMatrix off the label image and check the indicium against the
// keys the hub publishes. It reads with gozxing in-process, and with
// zxing-cpp's ZXingReader as an independent reader.
package verify

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"image"
	"image/png"
	"net/http"
	"os"
	"os/exec"
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
}

// Keys maps certificate serials to public keys.
type Keys map[uint32]*ecdsa.PublicKey

// FetchKeys gets the published keys from a hub's base URL.
func FetchKeys(ctx context.Context, hubURL string, client *http.Client) (Keys, error) {
	if client == nil {
		client = http.DefaultClient
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, hubURL+"/api/v1/certificates", nil)
	if err != nil {
		return nil, err
	}
	resp, err := client.Do(req)
	if err != nil {
		return nil, fmt.Errorf("verify: certificates: %w", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("verify: certificates: %s", resp.Status)
	}
	var certs []Certificate
	if err := json.NewDecoder(resp.Body).Decode(&certs); err != nil {
		return nil, fmt.Errorf("verify: certificates: %w", err)
	}
	keys := Keys{}
	for _, c := range certs {
		blk, _ := pem.Decode([]byte(c.PublicKeyPEM))
		if blk == nil {
			return nil, fmt.Errorf("verify: certificate %d: not PEM", c.Serial)
		}
		k, err := x509.ParsePKIXPublicKey(blk.Bytes)
		if err != nil {
			return nil, fmt.Errorf("verify: certificate %d: %w", c.Serial, err)
		}
		ec, ok := k.(*ecdsa.PublicKey)
		if !ok {
			return nil, fmt.Errorf("verify: certificate %d: not an ECDSA key", c.Serial)
		}
		keys[c.Serial] = ec
	}
	return keys, nil
}

// Verify checks an indicium against the key its certificate serial names.
func (k Keys) Verify(b []byte) (*protocol.Indicium, error) {
	in, err := protocol.ParseIndicium(b)
	if err != nil {
		return nil, err
	}
	pub, ok := k[in.CertSerial]
	if !ok {
		return nil, fmt.Errorf("verify: no published key for certificate %d: %w", in.CertSerial, protocol.ErrIndiciumSignature)
	}
	return protocol.VerifyIndicium(b, pub)
}
