package protocol

import (
	"bytes"
	"crypto/ed25519"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"strings"
	"time"
)

// ActionUpdate offers a kiosk a signed release (Command.Release); its
// result comes once the kiosk runs the release and passed its health
// check, or once it rolled back (update_failed).
const ActionUpdate = "update"

// ReleaseManifest says what a release is: its version and, per
// architecture, the kiosk binary's size and SHA-256. Ops sign its exact
// bytes with the release key, which is kept apart from the hub's keys: a
// hub can offer a release, never make one.
type ReleaseManifest struct {
	Version   string     `json:"version"`
	Created   time.Time  `json:"created"`
	Artifacts []Artifact `json:"artifacts"`
}

// Artifact is one architecture's kiosk binary.
type Artifact struct {
	Arch   string `json:"arch"` // GOARCH: arm64, arm, amd64
	Size   int64  `json:"size"`
	SHA256 string `json:"sha256"` // hex
}

// For returns the artifact for arch.
func (m *ReleaseManifest) For(arch string) (Artifact, bool) {
	for _, a := range m.Artifacts {
		if a.Arch == arch {
			return a, true
		}
	}
	return Artifact{}, false
}

// ReleaseOffer is a release as a kiosk is offered it: the manifest's bytes
// and their signature, where to download each artifact (Path + "/" +
// arch, on the hub's HTTPS address), and how long the new version has to
// pass its health check before the kiosk rolls back.
type ReleaseOffer struct {
	Manifest  []byte `json:"manifest"`
	Signature []byte `json:"signature"`
	Path      string `json:"path"`
	HealthS   int    `json:"health_s"`
}

// ErrReleaseSignature is a release not signed by the release key.
var ErrReleaseSignature = errors.New("protocol: release: the signature does not verify with the release key")

// VerifyRelease checks a manifest's signature with the release key and
// reads it.
func VerifyRelease(key ed25519.PublicKey, manifest, sig []byte) (*ReleaseManifest, error) {
	if len(key) != ed25519.PublicKeySize || !ed25519.Verify(key, manifest, sig) {
		return nil, ErrReleaseSignature
	}
	var m ReleaseManifest
	if err := DecodeJSON(manifest, &m); err != nil {
		return nil, fmt.Errorf("protocol: release manifest: %w", err)
	}
	if !ValidVersion(m.Version) || len(m.Artifacts) == 0 {
		return nil, fmt.Errorf("protocol: release manifest: want a version and at least one artifact")
	}
	for _, a := range m.Artifacts {
		if b, err := hex.DecodeString(a.SHA256); err != nil || len(b) != 32 || a.Size <= 0 || !validToken(a.Arch, 16) {
			return nil, fmt.Errorf("protocol: release manifest: artifact %q: want an arch, a size and a SHA-256", a.Arch)
		}
	}
	return &m, nil
}

// ValidVersion: 1 to 64 of [A-Za-z0-9._+-], starting with a letter or
// digit, with no "..": safe as a directory name and in a URL path.
func ValidVersion(v string) bool {
	if len(v) == 0 || len(v) > 64 || strings.Contains(v, "..") {
		return false
	}
	for i := 0; i < len(v); i++ {
		c := v[i]
		alnum := c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9'
		if !alnum && (i == 0 || !strings.ContainsRune("._+-", rune(c))) {
			return false
		}
	}
	return true
}

// Release keys travel as PEM blocks of the raw Ed25519 key.
const (
	releasePublicPEM  = "FRANK RELEASE PUBLIC KEY"
	releasePrivatePEM = "FRANK RELEASE PRIVATE KEY"
)

// EncodeReleaseKey returns a release key as PEM, public or private.
func EncodeReleaseKey(key any) []byte {
	switch k := key.(type) {
	case ed25519.PublicKey:
		return pem.EncodeToMemory(&pem.Block{Type: releasePublicPEM, Bytes: k})
	case ed25519.PrivateKey:
		return pem.EncodeToMemory(&pem.Block{Type: releasePrivatePEM, Bytes: k.Seed()})
	}
	return nil
}

// ParseReleasePublicKey reads a release public key from PEM.
func ParseReleasePublicKey(b []byte) (ed25519.PublicKey, error) {
	blk, _ := pem.Decode(bytes.TrimSpace(b))
	if blk == nil || blk.Type != releasePublicPEM || len(blk.Bytes) != ed25519.PublicKeySize {
		return nil, fmt.Errorf("protocol: want a %q PEM block", releasePublicPEM)
	}
	return ed25519.PublicKey(blk.Bytes), nil
}

// ParseReleasePrivateKey reads a release private key from PEM.
func ParseReleasePrivateKey(b []byte) (ed25519.PrivateKey, error) {
	blk, _ := pem.Decode(bytes.TrimSpace(b))
	if blk == nil || blk.Type != releasePrivatePEM || len(blk.Bytes) != ed25519.SeedSize {
		return nil, fmt.Errorf("protocol: want a %q PEM block", releasePrivatePEM)
	}
	return ed25519.NewKeyFromSeed(blk.Bytes), nil
}
