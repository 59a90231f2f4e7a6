package hub

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/pem"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// FuzzLoadKey feeds the hub's TLS key file (tls/hub.key in its data
// directory) to loadKey. It never panics and never makes a new key over a
// file that is there; a file it refuses is an error that names the file;
// and a key it takes is a whole EC key, its public half on its curve, that
// the file holds: written again it is the same key.
func FuzzLoadKey(f *testing.F) {
	dir := f.TempDir()
	path := filepath.Join(dir, "tls", "hub.key")
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		f.Fatal(err)
	}
	block := func(typ string, der []byte) []byte { return pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}) }
	for _, c := range []elliptic.Curve{elliptic.P256(), elliptic.P384()} {
		k, err := ecdsa.GenerateKey(c, rand.Reader)
		if err != nil {
			f.Fatal(err)
		}
		der, _ := x509.MarshalECPrivateKey(k)
		f.Add(block("EC PRIVATE KEY", der)) // as the hub writes it
		f.Add(append([]byte("junk before\n"), block("EC PRIVATE KEY", der)...))
		f.Add(block("EC PRIVATE KEY", der[:len(der)/2]))
		pk8, _ := x509.MarshalPKCS8PrivateKey(k)
		f.Add(block("PRIVATE KEY", pk8))
		pub, _ := x509.MarshalPKIXPublicKey(&k.PublicKey)
		f.Add(block("PUBLIC KEY", pub))
	}
	rk, err := rsa.GenerateKey(rand.Reader, 1024)
	if err != nil {
		f.Fatal(err)
	}
	f.Add(block("RSA PRIVATE KEY", x509.MarshalPKCS1PrivateKey(rk)))
	for _, s := range []string{"", "\n", "not a key", "-----BEGIN EC PRIVATE KEY-----\n", "-----BEGIN EC PRIVATE KEY-----\n!!!\n-----END EC PRIVATE KEY-----\n",
		"-----BEGIN EC PRIVATE KEY-----\nMAA=\n-----END EC PRIVATE KEY-----\n", "\xff\x00"} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		if err := os.WriteFile(path, b, 0o600); err != nil {
			t.Fatal(err)
		}
		k, err := loadKey(dir)
		if after, rerr := os.ReadFile(path); rerr != nil || !bytes.Equal(after, b) {
			t.Fatalf("%q: loadKey changed the key file to %q (%v)", b, after, rerr)
		}
		if err != nil {
			if k != nil || !strings.HasPrefix(err.Error(), "hub: tls key "+path+": ") {
				t.Fatalf("%q: %v and the error %q, which does not name the file", b, k != nil, err)
			}
			return
		}
		if k == nil || k.Curve == nil {
			t.Fatalf("%q: took a key that is not whole: %+v", b, k)
		}
		if _, err := k.Bytes(); err != nil { // a scalar in range
			t.Fatalf("%q: took a key that is not whole: %v", b, err)
		}
		if _, err := k.PublicKey.Bytes(); err != nil { // a point on its curve
			t.Fatalf("%q: took a key whose public half is not whole: %v", b, err)
		}
		der, err := x509.MarshalECPrivateKey(k)
		if err != nil {
			t.Fatalf("%q: the key taken does not write again: %v", b, err)
		}
		again, err := x509.ParseECPrivateKey(der)
		if err != nil || !again.Equal(k) {
			t.Fatalf("%q: the key taken reads back as another: %v", b, err)
		}
	})
}
