// Package soft is the development key store: each key is sealed with
// AES-256-GCM under a master key and kept in its own file. It has the same
// shape as the PKCS#11 backend so the hub can run on a laptop with nothing
// installed. Production uses a real HSM.
package soft

import (
	"crypto"
	"crypto/aes"
	"crypto/cipher"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/frank-postage/frank/hsm"
)

const masterFile = "master.key"

// Keystore is a directory of sealed keys. It is safe for concurrent use.
type Keystore struct {
	dir    string
	aead   cipher.AEAD
	mu     sync.Mutex
	signer map[string]*ecdsa.PrivateKey
	mac    map[string][]byte
}

type record struct {
	Label   string    `json:"label"`
	Type    string    `json:"type"` // ec-p256 or hmac-sha256
	Public  []byte    `json:"public,omitempty"`
	Nonce   []byte    `json:"nonce"`
	Sealed  []byte    `json:"sealed"`
	Created time.Time `json:"created"`
}

const (
	typeEC   = "ec-p256"
	typeHMAC = "hmac-sha256"
)

// Open opens the key store in dir, creating it and a random master key on
// first use. The master key file is readable by its owner only.
func Open(dir string) (*Keystore, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("soft: open: %w", err)
	}
	master, err := os.ReadFile(filepath.Join(dir, masterFile))
	if errors.Is(err, fs.ErrNotExist) {
		master = make([]byte, 32)
		if _, err := rand.Read(master); err != nil {
			return nil, fmt.Errorf("soft: open: %w", err)
		}
		err = writeFileSync(filepath.Join(dir, masterFile), master)
	}
	if err != nil {
		return nil, fmt.Errorf("soft: open: %w", err)
	}
	if len(master) != 32 {
		return nil, fmt.Errorf("soft: open: master key is %d bytes, want 32", len(master))
	}
	block, err := aes.NewCipher(master)
	if err != nil {
		return nil, fmt.Errorf("soft: open: %w", err)
	}
	aead, err := cipher.NewGCM(block)
	if err != nil {
		return nil, fmt.Errorf("soft: open: %w", err)
	}
	return &Keystore{dir: dir, aead: aead, signer: map[string]*ecdsa.PrivateKey{}, mac: map[string][]byte{}}, nil
}

// The one key-store contract.
var (
	_ hsm.Module  = (*Keystore)(nil)
	_ hsm.Session = (*Session)(nil)
)

// GenerateSigningKey creates a P-256 key under label and returns its public half.
func (k *Keystore) GenerateSigningKey(label string) (*ecdsa.PublicKey, error) {
	priv, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("soft: generate %s: %w", label, err)
	}
	raw, err := priv.Bytes()
	if err != nil {
		return nil, fmt.Errorf("soft: generate %s: %w", label, err)
	}
	pub, err := x509.MarshalPKIXPublicKey(&priv.PublicKey)
	if err != nil {
		return nil, fmt.Errorf("soft: generate %s: %w", label, err)
	}
	if err := k.store(label, typeEC, raw, pub); err != nil {
		return nil, err
	}
	return &priv.PublicKey, nil
}

// GenerateMACKey creates a 256-bit HMAC key under label.
func (k *Keystore) GenerateMACKey(label string) error {
	key := make([]byte, 32)
	if _, err := rand.Read(key); err != nil {
		return fmt.Errorf("soft: generate %s: %w", label, err)
	}
	return k.store(label, typeHMAC, key, nil)
}

// Public returns the public key of a signing key.
func (k *Keystore) Public(label string) (*ecdsa.PublicKey, error) {
	priv, err := k.signingKey(label)
	if err != nil {
		return nil, err
	}
	return &priv.PublicKey, nil
}

// Session returns a handle for one goroutine. The soft store needs no
// per-goroutine state; the method exists to match the PKCS#11 backend.
func (k *Keystore) Session() (*Session, error) { return &Session{k: k}, nil }

// Close forgets the unsealed keys.
func (k *Keystore) Close() error {
	k.mu.Lock()
	defer k.mu.Unlock()
	clear(k.signer)
	clear(k.mac)
	return nil
}

// Session signs and MACs.
type Session struct{ k *Keystore }

// Signer returns a crypto.Signer for the signing key label.
func (s *Session) Signer(label string) (crypto.Signer, error) {
	priv, err := s.k.signingKey(label)
	if err != nil {
		return nil, err
	}
	return signer{priv}, nil
}

// MAC returns HMAC-SHA-256 of data under the key label.
func (s *Session) MAC(label string, data []byte) ([]byte, error) {
	key, err := s.k.macKey(label)
	if err != nil {
		return nil, err
	}
	m := hmac.New(sha256.New, key)
	m.Write(data)
	return m.Sum(nil), nil
}

// Close ends the session.
func (s *Session) Close() error { return nil }

// signer hides the private key behind crypto.Signer so callers cannot reach it.
type signer struct{ priv *ecdsa.PrivateKey }

func (s signer) Public() crypto.PublicKey { return &s.priv.PublicKey }

func (s signer) Sign(rnd io.Reader, digest []byte, opts crypto.SignerOpts) ([]byte, error) {
	if opts.HashFunc() != crypto.SHA256 || len(digest) != sha256.Size {
		return nil, errors.New("soft: sign: want a SHA-256 digest")
	}
	return ecdsa.SignASN1(rnd, s.priv, digest)
}

func (k *Keystore) signingKey(label string) (*ecdsa.PrivateKey, error) {
	k.mu.Lock()
	defer k.mu.Unlock()
	if priv, ok := k.signer[label]; ok {
		return priv, nil
	}
	raw, err := k.load(label, typeEC)
	if err != nil {
		return nil, err
	}
	priv, err := ecdsa.ParseRawPrivateKey(elliptic.P256(), raw)
	if err != nil {
		return nil, fmt.Errorf("soft: load %s: %w", label, err)
	}
	k.signer[label] = priv
	return priv, nil
}

func (k *Keystore) macKey(label string) ([]byte, error) {
	k.mu.Lock()
	defer k.mu.Unlock()
	if key, ok := k.mac[label]; ok {
		return key, nil
	}
	key, err := k.load(label, typeHMAC)
	if err != nil {
		return nil, err
	}
	k.mac[label] = key
	return key, nil
}

func (k *Keystore) path(label string) string { return filepath.Join(k.dir, label+".key.json") }

func (k *Keystore) store(label, typ string, secret, public []byte) error {
	if !hsm.ValidLabel(label) {
		return fmt.Errorf("soft: store %q: %w", label, hsm.ErrLabel)
	}
	if _, err := os.Stat(k.path(label)); err == nil {
		return fmt.Errorf("soft: store %s: %w", label, hsm.ErrKeyExists)
	}
	nonce := make([]byte, k.aead.NonceSize())
	if _, err := rand.Read(nonce); err != nil {
		return fmt.Errorf("soft: store %s: %w", label, err)
	}
	r := record{Label: label, Type: typ, Public: public, Nonce: nonce,
		Sealed: k.aead.Seal(nil, nonce, secret, []byte(label+"\x00"+typ)), Created: time.Now().UTC()}
	b, err := json.MarshalIndent(r, "", "  ")
	if err != nil {
		return fmt.Errorf("soft: store %s: %w", label, err)
	}
	if err := writeFileSync(k.path(label), b); err != nil {
		return fmt.Errorf("soft: store %s: %w", label, err)
	}
	return nil
}

func (k *Keystore) load(label, typ string) ([]byte, error) {
	if !hsm.ValidLabel(label) {
		return nil, fmt.Errorf("soft: load %q: %w", label, hsm.ErrLabel)
	}
	b, err := os.ReadFile(k.path(label))
	if errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("soft: load %s: %w", label, hsm.ErrNoKey)
	}
	if err != nil {
		return nil, fmt.Errorf("soft: load %s: %w", label, err)
	}
	var r record
	if err := json.Unmarshal(b, &r); err != nil {
		return nil, fmt.Errorf("soft: load %s: %w", label, err)
	}
	if r.Type != typ || r.Label != label {
		return nil, fmt.Errorf("soft: load %s: is a %s key: %w", label, r.Type, hsm.ErrNoKey)
	}
	secret, err := k.aead.Open(nil, r.Nonce, r.Sealed, []byte(label+"\x00"+typ))
	if err != nil {
		return nil, fmt.Errorf("soft: load %s: unseal: %w", label, err)
	}
	return secret, nil
}

// writeFileSync writes a new file and syncs it and its directory, so a key
// that was reported created survives a power cut.
func writeFileSync(name string, b []byte) error {
	tmp := name + ".tmp"
	f, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return err
	}
	// A .tmp left by a crash keeps the mode it was made with: set it.
	if err := f.Chmod(0o600); err != nil {
		f.Close()
		return err
	}
	if _, err := f.Write(b); err != nil {
		f.Close()
		return err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	if err := os.Rename(tmp, name); err != nil {
		return err
	}
	d, err := os.Open(filepath.Dir(name))
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}
