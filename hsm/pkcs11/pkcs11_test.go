//go:build cgo

package pkcs11

import (
	"crypto"
	"crypto/rand"
	"crypto/sha256"
	"errors"
	"fmt"
	"os"
	"slices"
	"testing"

	p11 "github.com/miekg/pkcs11"

	"github.com/frank-postage/frank/hsm"
	"github.com/frank-postage/frank/hsm/hsmtest"
	"github.com/frank-postage/frank/testbench/softhsm"
)

var token *Token

// TestMain sets up one SoftHSM2 token for the package: the library can be
// initialized once per process.
func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "frank-softhsm")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	code := func() int {
		defer os.RemoveAll(dir)
		tok, err := softhsm.Setup(dir, "frank-test", "1234")
		if err != nil {
			fmt.Fprintln(os.Stderr, "pkcs11 tests:", err)
			return 1
		}
		if token, err = Open(Config{Module: tok.Module, Token: tok.Label, PIN: tok.PIN}); err != nil {
			fmt.Fprintln(os.Stderr, "pkcs11 tests:", err)
			return 1
		}
		defer token.Close()
		return m.Run()
	}()
	os.Exit(code)
}

func TestContract(t *testing.T) {
	hsmtest.Run(t, func(t *testing.T) (hsm.Module, func() (hsm.Session, error)) {
		return token, func() (hsm.Session, error) { return token.Session() }
	})
}

// The private key and the MAC key cannot be read out of the token.
func TestKeysDoNotLeave(t *testing.T) {
	if _, err := token.GenerateSigningKey("leak-sign"); err != nil {
		t.Fatal(err)
	}
	if err := token.GenerateMACKey("leak-mac"); err != nil {
		t.Fatal(err)
	}
	token.mu.Lock()
	defer token.mu.Unlock()
	for _, k := range []struct {
		label       string
		class, kind uint
	}{{"leak-sign", p11.CKO_PRIVATE_KEY, p11.CKK_EC}, {"leak-mac", p11.CKO_SECRET_KEY, p11.CKK_GENERIC_SECRET}} {
		h, err := findOne(token.ctx, token.mgmt, k.label, k.class, k.kind)
		if err != nil {
			t.Fatal(err)
		}
		_, err = token.ctx.GetAttributeValue(token.mgmt, h, []*p11.Attribute{p11.NewAttribute(p11.CKA_VALUE, nil)})
		if !isErr(err, p11.CKR_ATTRIBUTE_SENSITIVE) {
			t.Errorf("%s: reading CKA_VALUE gave %v, want CKR_ATTRIBUTE_SENSITIVE", k.label, err)
		}
		attrs, err := token.ctx.GetAttributeValue(token.mgmt, h, []*p11.Attribute{
			p11.NewAttribute(p11.CKA_SENSITIVE, nil), p11.NewAttribute(p11.CKA_EXTRACTABLE, nil)})
		if err != nil {
			t.Fatal(err)
		}
		if attrs[0].Value[0] != 1 || attrs[1].Value[0] != 0 {
			t.Errorf("%s: sensitive=%v extractable=%v", k.label, attrs[0].Value, attrs[1].Value)
		}
	}
}

// Each key can do its job and nothing else, read back from the token: the
// signing key signs, its public half verifies, the control-code key signs
// and verifies (HMAC); no key encrypts, decrypts, wraps, unwraps, derives
// or recovers; private and secret keys are sensitive and were never
// extractable.
func TestKeysDoOnlyTheirJob(t *testing.T) {
	if _, err := token.GenerateSigningKey("job-sign"); err != nil {
		t.Fatal(err)
	}
	if err := token.GenerateMACKey("job-mac"); err != nil {
		t.Fatal(err)
	}
	token.mu.Lock()
	defer token.mu.Unlock()
	secrecy := []uint{p11.CKA_SENSITIVE, p11.CKA_EXTRACTABLE, p11.CKA_ALWAYS_SENSITIVE, p11.CKA_NEVER_EXTRACTABLE}
	names := map[uint]string{p11.CKA_ENCRYPT: "encrypt", p11.CKA_DECRYPT: "decrypt", p11.CKA_SIGN: "sign", p11.CKA_VERIFY: "verify",
		p11.CKA_SIGN_RECOVER: "sign_recover", p11.CKA_VERIFY_RECOVER: "verify_recover", p11.CKA_WRAP: "wrap", p11.CKA_UNWRAP: "unwrap",
		p11.CKA_DERIVE: "derive", p11.CKA_SENSITIVE: "sensitive", p11.CKA_EXTRACTABLE: "extractable",
		p11.CKA_ALWAYS_SENSITIVE: "always_sensitive", p11.CKA_NEVER_EXTRACTABLE: "never_extractable"}
	for _, k := range []struct {
		label       string
		class, kind uint
		want        map[uint]bool // attributes that must be true; the others in names must be false
	}{
		{"job-sign", p11.CKO_PRIVATE_KEY, p11.CKK_EC, map[uint]bool{p11.CKA_SIGN: true, p11.CKA_SENSITIVE: true,
			p11.CKA_ALWAYS_SENSITIVE: true, p11.CKA_NEVER_EXTRACTABLE: true}},
		{"job-sign", p11.CKO_PUBLIC_KEY, p11.CKK_EC, map[uint]bool{p11.CKA_VERIFY: true}},
		{"job-mac", p11.CKO_SECRET_KEY, p11.CKK_GENERIC_SECRET, map[uint]bool{p11.CKA_SIGN: true, p11.CKA_VERIFY: true,
			p11.CKA_SENSITIVE: true, p11.CKA_ALWAYS_SENSITIVE: true, p11.CKA_NEVER_EXTRACTABLE: true}},
	} {
		h, err := findOne(token.ctx, token.mgmt, k.label, k.class, k.kind)
		if err != nil {
			t.Fatal(err)
		}
		for attr, name := range names {
			switch {
			case k.class == p11.CKO_PUBLIC_KEY && !slices.Contains(publicUses, attr),
				k.class == p11.CKO_SECRET_KEY && !slices.Contains(secretUses, attr) && !slices.Contains(secrecy, attr),
				k.class == p11.CKO_PRIVATE_KEY && !slices.Contains(privateUses, attr) && !slices.Contains(secrecy, attr):
				continue // not an attribute of this class
			}
			got, err := token.ctx.GetAttributeValue(token.mgmt, h, []*p11.Attribute{p11.NewAttribute(attr, nil)})
			if err != nil {
				t.Fatalf("%s (class %d): %s: %v", k.label, k.class, name, err)
			}
			if on := len(got[0].Value) > 0 && got[0].Value[0] != 0; on != k.want[attr] {
				t.Errorf("%s (class %d): %s is %v, want %v", k.label, k.class, name, on, k.want[attr])
			}
		}
	}
}

func TestOpenUnknownToken(t *testing.T) {
	_, err := Open(Config{Module: token.cfg.Module, Token: "no-such-token", PIN: "1"})
	if err == nil {
		t.Fatal("opened a token that does not exist")
	}
}

func TestSignRejectsWrongHash(t *testing.T) {
	if _, err := token.GenerateSigningKey("wrong-hash"); err != nil {
		t.Fatal(err)
	}
	s, _ := token.Session()
	defer s.Close()
	sg, _ := s.Signer("wrong-hash")
	if _, err := sg.Sign(rand.Reader, make([]byte, 20), crypto.SHA1); err == nil {
		t.Fatal("signed a SHA-1 digest")
	}
}

// BenchmarkSign is SoftHSM2's raw P-256 signing rate on one session.
func BenchmarkSign(b *testing.B) {
	if _, err := token.GenerateSigningKey("bench"); err != nil && !errors.Is(err, hsm.ErrKeyExists) {
		b.Fatal(err)
	}
	s, _ := token.Session()
	defer s.Close()
	sg, err := s.Signer("bench")
	if err != nil {
		b.Fatal(err)
	}
	d := sha256.Sum256([]byte("x"))
	for b.Loop() {
		if _, err := sg.Sign(rand.Reader, d[:], crypto.SHA256); err != nil {
			b.Fatal(err)
		}
	}
}
