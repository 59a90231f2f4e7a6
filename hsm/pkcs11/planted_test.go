//go:build cgo

package pkcs11

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"encoding/asn1"
	"errors"
	"strings"
	"testing"

	p11 "github.com/miekg/pkcs11"

	"github.com/frank-postage/frank/hsm"
)

// A key put on the token under a label the hub uses, by someone else and
// readable (or once readable) out of it, is refused by Signer and MAC with
// ErrKeyExportable naming the label and the attribute; two keys of one
// label are refused too; the hub's own keys still sign and MAC.
func TestPlantedKeysRefused(t *testing.T) {
	sh, err := token.mod.ctx.OpenSession(token.slot, p11.CKF_SERIAL_SESSION|p11.CKF_RW_SESSION)
	if err != nil {
		t.Fatal(err)
	}
	defer token.mod.ctx.CloseSession(sh)
	p := planter{t: t, sh: sh}

	p.ecPair("planted-sign-extractable", false, true)
	p.ecImport("planted-sign-imported")
	p.secret("planted-mac-extractable", false, true)
	p.secretImport("planted-mac-imported")
	// Extractable once, locked down since: a copy may already exist.
	h := p.secret("planted-mac-was-extractable", false, true)
	if err := token.mod.ctx.SetAttributeValue(sh, h, []*p11.Attribute{
		p11.NewAttribute(p11.CKA_SENSITIVE, true), p11.NewAttribute(p11.CKA_EXTRACTABLE, false)}); err != nil {
		t.Fatal(err)
	}

	s, err := token.Session()
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	for _, c := range []struct {
		label, mac, attr string
	}{
		{"planted-sign-extractable", "", "CKA_EXTRACTABLE is true"},
		{"planted-sign-imported", "", "CKA_NEVER_EXTRACTABLE is false"},
		{"planted-mac-extractable", "mac", "CKA_SENSITIVE is false"},
		{"planted-mac-imported", "mac", "CKA_ALWAYS_SENSITIVE is false"},
		{"planted-mac-was-extractable", "mac", "CKA_NEVER_EXTRACTABLE is false"},
	} {
		var err error
		if c.mac != "" {
			_, err = s.MAC(c.label, []byte("x"))
		} else {
			_, err = s.Signer(c.label)
		}
		if !errors.Is(err, hsm.ErrKeyExportable) || !strings.Contains(err.Error(), c.label) || !strings.Contains(err.Error(), c.attr) {
			t.Errorf("%s: %v; want ErrKeyExportable naming the label and %q", c.label, err, c.attr)
		}
		// Refused again, not remembered as good.
		if c.mac != "" {
			_, err = s.MAC(c.label, []byte("x"))
		} else {
			_, err = s.Signer(c.label)
		}
		if !errors.Is(err, hsm.ErrKeyExportable) {
			t.Errorf("%s, second time: %v", c.label, err)
		}
	}

	// A well-made key beside the hub's, under its label.
	if _, err := token.GenerateSigningKey("planted-dup"); err != nil {
		t.Fatal(err)
	}
	p.ecPair("planted-dup", true, false)
	if _, err := s.Signer("planted-dup"); !errors.Is(err, hsm.ErrKeyExists) {
		t.Errorf("two keys of one label: %v, want ErrKeyExists", err)
	}

	// The hub's own keys pass.
	pub, err := token.GenerateSigningKey("planted-hub-sign")
	if err != nil {
		t.Fatal(err)
	}
	if err := token.GenerateMACKey("planted-hub-mac"); err != nil {
		t.Fatal(err)
	}
	sg, err := s.Signer("planted-hub-sign")
	if err != nil {
		t.Fatal(err)
	}
	d := sha256.Sum256([]byte("stamp"))
	der, err := sg.Sign(rand.Reader, d[:], crypto.SHA256)
	if err != nil || !ecdsa.VerifyASN1(pub, d[:], der) {
		t.Fatalf("the hub's key: sign %v, verifies %v", err, err == nil && ecdsa.VerifyASN1(pub, d[:], der))
	}
	if m, err := s.MAC("planted-hub-mac", []byte("x")); err != nil || len(m) != sha256.Size {
		t.Fatalf("the hub's MAC key: %x, %v", m, err)
	}
}

// planter puts keys on the token as someone other than the hub would,
// through miekg/pkcs11 directly.
type planter struct {
	t  *testing.T
	sh p11.SessionHandle
}

func (p planter) ecPair(label string, sensitive, extractable bool) {
	p.t.Helper()
	pub := []*p11.Attribute{
		p11.NewAttribute(p11.CKA_CLASS, p11.CKO_PUBLIC_KEY),
		p11.NewAttribute(p11.CKA_KEY_TYPE, p11.CKK_EC),
		p11.NewAttribute(p11.CKA_TOKEN, true),
		p11.NewAttribute(p11.CKA_EC_PARAMS, oidP256),
		p11.NewAttribute(p11.CKA_VERIFY, true),
		p11.NewAttribute(p11.CKA_LABEL, label),
	}
	priv := []*p11.Attribute{
		p11.NewAttribute(p11.CKA_CLASS, p11.CKO_PRIVATE_KEY),
		p11.NewAttribute(p11.CKA_KEY_TYPE, p11.CKK_EC),
		p11.NewAttribute(p11.CKA_TOKEN, true),
		p11.NewAttribute(p11.CKA_PRIVATE, true),
		p11.NewAttribute(p11.CKA_SENSITIVE, sensitive),
		p11.NewAttribute(p11.CKA_EXTRACTABLE, extractable),
		p11.NewAttribute(p11.CKA_SIGN, true),
		p11.NewAttribute(p11.CKA_LABEL, label),
	}
	if _, _, err := token.mod.ctx.GenerateKeyPair(p.sh, []*p11.Mechanism{p11.NewMechanism(p11.CKM_EC_KEY_PAIR_GEN, nil)}, pub, priv); err != nil {
		p.t.Fatalf("plant %s: %v", label, err)
	}
}

// ecImport puts a key made outside the token on it, marked sensitive and
// not extractable from now on.
func (p planter) ecImport(label string) {
	p.t.Helper()
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		p.t.Fatal(err)
	}
	scalar, err := k.Bytes()
	if err != nil {
		p.t.Fatal(err)
	}
	raw, err := k.PublicKey.Bytes()
	if err != nil {
		p.t.Fatal(err)
	}
	point, err := asn1.Marshal(raw)
	if err != nil {
		p.t.Fatal(err)
	}
	p.create(label, []*p11.Attribute{
		p11.NewAttribute(p11.CKA_CLASS, p11.CKO_PUBLIC_KEY),
		p11.NewAttribute(p11.CKA_KEY_TYPE, p11.CKK_EC),
		p11.NewAttribute(p11.CKA_EC_PARAMS, oidP256),
		p11.NewAttribute(p11.CKA_EC_POINT, point),
		p11.NewAttribute(p11.CKA_VERIFY, true),
	})
	p.create(label, []*p11.Attribute{
		p11.NewAttribute(p11.CKA_CLASS, p11.CKO_PRIVATE_KEY),
		p11.NewAttribute(p11.CKA_KEY_TYPE, p11.CKK_EC),
		p11.NewAttribute(p11.CKA_EC_PARAMS, oidP256),
		p11.NewAttribute(p11.CKA_VALUE, scalar),
		p11.NewAttribute(p11.CKA_PRIVATE, true),
		p11.NewAttribute(p11.CKA_SENSITIVE, true),
		p11.NewAttribute(p11.CKA_EXTRACTABLE, false),
		p11.NewAttribute(p11.CKA_SIGN, true),
	})
}

func (p planter) secret(label string, sensitive, extractable bool) p11.ObjectHandle {
	p.t.Helper()
	h, err := token.mod.ctx.GenerateKey(p.sh, []*p11.Mechanism{p11.NewMechanism(p11.CKM_GENERIC_SECRET_KEY_GEN, nil)}, []*p11.Attribute{
		p11.NewAttribute(p11.CKA_CLASS, p11.CKO_SECRET_KEY),
		p11.NewAttribute(p11.CKA_KEY_TYPE, p11.CKK_GENERIC_SECRET),
		p11.NewAttribute(p11.CKA_VALUE_LEN, 32),
		p11.NewAttribute(p11.CKA_TOKEN, true),
		p11.NewAttribute(p11.CKA_PRIVATE, true),
		p11.NewAttribute(p11.CKA_SENSITIVE, sensitive),
		p11.NewAttribute(p11.CKA_EXTRACTABLE, extractable),
		p11.NewAttribute(p11.CKA_SIGN, true),
		p11.NewAttribute(p11.CKA_LABEL, label),
	})
	if err != nil {
		p.t.Fatalf("plant %s: %v", label, err)
	}
	return h
}

// secretImport puts a secret known outside the token on it.
func (p planter) secretImport(label string) {
	p.t.Helper()
	p.create(label, []*p11.Attribute{
		p11.NewAttribute(p11.CKA_CLASS, p11.CKO_SECRET_KEY),
		p11.NewAttribute(p11.CKA_KEY_TYPE, p11.CKK_GENERIC_SECRET),
		p11.NewAttribute(p11.CKA_VALUE, []byte(strings.Repeat("k", 32))),
		p11.NewAttribute(p11.CKA_PRIVATE, true),
		p11.NewAttribute(p11.CKA_SENSITIVE, true),
		p11.NewAttribute(p11.CKA_EXTRACTABLE, false),
		p11.NewAttribute(p11.CKA_SIGN, true),
	})
}

func (p planter) create(label string, tmpl []*p11.Attribute) {
	p.t.Helper()
	tmpl = append(tmpl, p11.NewAttribute(p11.CKA_TOKEN, true), p11.NewAttribute(p11.CKA_LABEL, label))
	if _, err := token.mod.ctx.CreateObject(p.sh, tmpl); err != nil {
		p.t.Fatalf("plant %s: %v", label, err)
	}
}
