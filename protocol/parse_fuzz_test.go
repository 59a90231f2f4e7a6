package protocol_test

import (
	"bytes"
	"crypto/ed25519"
	"encoding/pem"
	"testing"

	"github.com/frank-postage/frank/protocol"
)

// Every message the hub takes off the broker is routed by its topic, which
// names the kiosk the broker let publish it. What ParseKioskTopic takes is
// exactly KioskTopic of a valid kiosk id and a suffix, so no topic can name
// one kiosk to the router and another to the broker's ACL; what it refuses
// gives no id or suffix. Any valid id and suffix come back out as put in.
func FuzzParseKioskTopic(f *testing.F) {
	for _, s := range []string{"frank/v1/kiosks/kiosk-1/purchase", "frank/v1/kiosks/kiosk-1/purchase/result", "frank/v1/kiosks//purchase",
		"frank/v1/kiosks/kiosk-1/", "frank/v1/kiosks/kiosk-1", "frank/v1/kiosks/frank-hub-1/status", "frank/v1/kiosks/+/telemetry",
		"$share/frank-hub/frank/v1/kiosks/+/print", "frank/v2/kiosks/k/print", "frank/v1/kiosks/-k/print", "frank/v1/kiosks/k\x00/print"} {
		f.Add(s, "kiosk-1", "telemetry")
	}
	f.Add("", "k/1", "print")
	f.Add("", "frank-hub", "status")
	f.Fuzz(func(t *testing.T, topic, id, suffix string) {
		kid, suf, err := protocol.ParseKioskTopic(topic)
		if err != nil {
			if kid != "" || suf != "" {
				t.Fatalf("%q refused (%v) yet gave %q, %q", topic, err, kid, suf)
			}
		} else if !protocol.ValidKioskID(kid) || suf == "" || protocol.KioskTopic(kid, suf) != topic {
			t.Fatalf("%q taken as %q, %q", topic, kid, suf)
		}
		if !protocol.ValidKioskID(id) || suffix == "" {
			return
		}
		if kid, suf, err := protocol.ParseKioskTopic(protocol.KioskTopic(id, suffix)); err != nil || kid != id || suf != suffix {
			t.Fatalf("%q, %q -> %q, %q, %v", id, suffix, kid, suf, err)
		}
	})
}

// A release public key is read from the kiosk's configuration and from
// the release tooling's files. What ParseReleasePublicKey takes is the 32
// bytes of the first PEM block, typed as a release public key, and
// EncodeReleaseKey writes it back to the same key; what it refuses gives no
// key and an error that quotes nothing of the input.
func FuzzParseReleasePublicKey(f *testing.F) {
	pub, priv, err := ed25519.GenerateKey(nil)
	if err != nil {
		f.Fatal(err)
	}
	f.Add(protocol.EncodeReleaseKey(pub))
	f.Add(append([]byte("\n\t "), protocol.EncodeReleaseKey(pub)...))
	f.Add(protocol.EncodeReleaseKey(priv))
	f.Add(pem.EncodeToMemory(&pem.Block{Type: "FRANK RELEASE PUBLIC KEY", Bytes: pub[:31]}))
	f.Add(pem.EncodeToMemory(&pem.Block{Type: "FRANK RELEASE PUBLIC KEY", Headers: map[string]string{"Proc-Type": "4,ENCRYPTED"}, Bytes: pub}))
	f.Add(pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: pub}))
	f.Add([]byte("-----BEGIN FRANK RELEASE PUBLIC KEY-----\n4111111111111111\n-----END FRANK RELEASE PUBLIC KEY-----\n"))
	f.Fuzz(func(t *testing.T, b []byte) {
		k, err := protocol.ParseReleasePublicKey(b)
		if err != nil {
			if k != nil || protocol.HasCardNumber(err.Error()) || bytes.Contains([]byte(err.Error()), bytes.TrimSpace(b)) && len(bytes.TrimSpace(b)) > 8 {
				t.Fatalf("refused with key %x and %q", k, err)
			}
			return
		}
		blk, _ := pem.Decode(bytes.TrimSpace(b))
		if len(k) != ed25519.PublicKeySize || blk == nil || blk.Type != "FRANK RELEASE PUBLIC KEY" || !bytes.Equal(blk.Bytes, k) {
			t.Fatalf("%q taken as %x", b, k)
		}
		if back, err := protocol.ParseReleasePublicKey(protocol.EncodeReleaseKey(k)); err != nil || !back.Equal(k) {
			t.Fatalf("%x -> %x, %v", k, back, err)
		}
	})
}
