package main

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/frank-postage/frank/hub"
	"github.com/frank-postage/frank/hub/releases"
	"github.com/frank-postage/frank/protocol"
)

// releaseCmd makes, signs and publishes kiosk releases. keygen and sign
// run where the release key is kept (not on a hub); publish checks the
// release against the public key and stores it in the hub's database.
func releaseCmd(ctx context.Context, open func() (*hub.Hub, error), cmd string, pos []string, key, out, version string) int {
	fail := func(err error) int {
		fmt.Fprintf(os.Stderr, "hub %s: %v\n", cmd, err)
		return 1
	}
	switch cmd {
	case "release keygen":
		if out == "" {
			return usage("hub release keygen --out DIR   (release.key, 0600, stays with ops; release.pub goes to every kiosk as /etc/frank/release.pub)")
		}
		pub, priv, err := ed25519.GenerateKey(rand.Reader)
		if err != nil {
			return fail(err)
		}
		if err := os.MkdirAll(out, 0o700); err != nil {
			return fail(err)
		}
		if err := os.WriteFile(filepath.Join(out, "release.key"), protocol.EncodeReleaseKey(priv), 0o600); err != nil {
			return fail(err)
		}
		if err := os.WriteFile(filepath.Join(out, "release.pub"), protocol.EncodeReleaseKey(pub), 0o644); err != nil {
			return fail(err)
		}
		fmt.Printf("release key written to %s/release.key; its public key to %s/release.pub\n", out, out)
	case "release sign":
		if key == "" || version == "" || out == "" || len(pos) == 0 {
			return usage("hub release sign --key release.key --release V --out DIR ARCH=BINARY ...")
		}
		b, err := os.ReadFile(key)
		if err != nil {
			return fail(err)
		}
		priv, err := protocol.ParseReleasePrivateKey(b)
		if err != nil {
			return fail(err)
		}
		m := protocol.ReleaseManifest{Version: version, Created: time.Now().UTC().Truncate(time.Second)}
		if err := os.MkdirAll(out, 0o755); err != nil {
			return fail(err)
		}
		for _, p := range pos {
			arch, path, ok := strings.Cut(p, "=")
			if !ok {
				return usage("hub release sign: want ARCH=BINARY, got " + p)
			}
			bin, err := os.ReadFile(path)
			if err != nil {
				return fail(err)
			}
			sum := sha256.Sum256(bin)
			m.Artifacts = append(m.Artifacts, protocol.Artifact{Arch: arch, Size: int64(len(bin)), SHA256: hex.EncodeToString(sum[:])})
			if err := os.WriteFile(filepath.Join(out, arch), bin, 0o644); err != nil {
				return fail(err)
			}
		}
		mb, _ := json.Marshal(m)
		if err := os.WriteFile(filepath.Join(out, "manifest.json"), mb, 0o644); err != nil {
			return fail(err)
		}
		if err := os.WriteFile(filepath.Join(out, "manifest.sig"), ed25519.Sign(priv, mb), 0o644); err != nil {
			return fail(err)
		}
		fmt.Printf("release %s signed in %s\n", version, out)
	case "release publish":
		if len(pos) != 1 || key == "" {
			return usage("hub release publish DIR --key release.pub")
		}
		b, err := os.ReadFile(key)
		if err != nil {
			return fail(err)
		}
		pub, err := protocol.ParseReleasePublicKey(b)
		if err != nil {
			return fail(err)
		}
		mb, err := os.ReadFile(filepath.Join(pos[0], "manifest.json"))
		if err != nil {
			return fail(err)
		}
		sig, err := os.ReadFile(filepath.Join(pos[0], "manifest.sig"))
		if err != nil {
			return fail(err)
		}
		m, err := protocol.VerifyRelease(pub, mb, sig)
		if err != nil {
			return fail(err)
		}
		bins := map[string][]byte{}
		for _, a := range m.Artifacts {
			if bins[a.Arch], err = os.ReadFile(filepath.Join(pos[0], a.Arch)); err != nil {
				return fail(err)
			}
		}
		h, err := open()
		if err != nil {
			return fail(err)
		}
		defer h.Close()
		if _, err := h.Releases().Publish(ctx, pub, mb, sig, bins, cliUser()); err != nil {
			return fail(err)
		}
		fmt.Printf("release %s published (%d architectures)\n", m.Version, len(m.Artifacts))
	}
	return 0
}

// rolloutCmd starts, widens, aborts and lists rollouts.
func rolloutCmd(ctx context.Context, h *hub.Hub, cmd string, pos []string, stages []string, maxFail int, soak, health time.Duration) int {
	fail := func(err error) int {
		fmt.Fprintf(os.Stderr, "hub %s: %v\n", cmd, err)
		return 1
	}
	rs := h.Releases()
	id := func() (int64, error) {
		if len(pos) != 1 {
			return 0, fmt.Errorf("want the rollout's id")
		}
		return strconv.ParseInt(pos[0], 10, 64)
	}
	switch cmd {
	case "rollout start":
		if len(pos) != 1 {
			return usage("hub rollout start VERSION [--stage kiosks=K1,K2|stores=S1|percent=N]... [--max-failures PCT] [--soak D] [--health D]")
		}
		var ss []releases.Stage
		for _, s := range stages {
			st, err := releases.ParseStage(s)
			if err != nil {
				return fail(err)
			}
			ss = append(ss, st)
		}
		ro, err := rs.Start(ctx, pos[0], ss, maxFail, soak, health, cliUser())
		if err != nil {
			return fail(err)
		}
		fmt.Printf("rollout %d of %s started: %d stages; the leading hub offers it within seconds\n", ro.ID, ro.Version, len(ro.Stages))
	case "rollout widen", "rollout abort":
		n, err := id()
		if err != nil {
			return fail(err)
		}
		if cmd == "rollout widen" {
			err = rs.Widen(ctx, n)
		} else {
			err = rs.Abort(ctx, n, cliUser())
		}
		if err != nil {
			return fail(err)
		}
		fmt.Printf("rollout %d: %s\n", n, strings.TrimPrefix(cmd, "rollout "))
	case "rollout list":
		list, err := rs.List(ctx)
		if err != nil {
			return fail(err)
		}
		for _, ro := range list {
			fmt.Printf("%d\t%s\t%s\tstage %d/%d\toffered %d healthy %d failed %d pending %d\t%s\n", ro.ID, ro.Version, ro.State,
				ro.Stage+1, len(ro.Stages), ro.Offered, ro.Healthy, ro.Failed, ro.Pending, ro.Why)
		}
	}
	return 0
}
