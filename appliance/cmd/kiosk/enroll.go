package main

import (
	"bytes"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/frank-postage/frank/appliance/identity"
	"github.com/frank-postage/frank/protocol"
)

// defaultEnrollment is where `kiosk enroll` keeps the credentials.
const defaultEnrollment = "/var/lib/frank/kiosk/enrollment.json"

// enrollment is what enrolling left on the device: who the kiosk is and
// how it logs in to the broker, with the certificate beside it (or, on a
// hub that allows them, a password). Only the kiosk's user may read it.
type enrollment struct {
	KioskID  string `json:"kiosk_id"`
	Store    string `json:"store"`
	Broker   string `json:"broker"`
	Username string `json:"username"`
	Password string `json:"password,omitempty"`
	// CertDir holds kiosk.key, kiosk.crt and ca.crt (identity.In).
	CertDir string `json:"cert_dir,omitempty"`
	// Fingerprint pins the hub's TLS, for renewal.
	Fingerprint string    `json:"fingerprint,omitempty"`
	OriginZIP   string    `json:"origin_zip,omitempty"`
	Hub         string    `json:"hub"`
	EnrolledAt  time.Time `json:"enrolled_at"`
}

// enroll runs `kiosk enroll --hub URL --code CODE`.
func enroll(args []string) int {
	fl := flag.NewFlagSet("kiosk enroll", flag.ContinueOnError)
	hub := fl.String("hub", "", "the hub's URL, like https://hub.example:8443 (required)")
	code := fl.String("code", "", "the one-time code `hub kiosk add` printed, with its @fingerprint (required)")
	fingerprint := fl.String("fingerprint", "", "the hub's TLS fingerprint, if the code does not carry it (hub ca show)")
	password := fl.Bool("password", false, "enroll for a broker password instead of a certificate (only a hub that allows kiosk passwords)")
	path := fl.String("enrollment", defaultEnrollment, "where to keep the credentials (mode 0600)")
	timeout := fl.Duration("timeout", 30*time.Second, "how long to wait for the hub")
	if err := fl.Parse(args); err != nil {
		return 2
	}
	u, err := url.Parse(*hub)
	if *hub == "" || *code == "" || err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		fmt.Fprintln(os.Stderr, "usage: kiosk enroll --hub https://hub.example:8443 --code XXXXX-XXXXX-XXXXX-XXXXX@FINGERPRINT [--enrollment PATH]")
		return 2
	}
	// Plain HTTP only on one machine, for a test bench.
	if u.Scheme == "http" && !isLoopback(u.Hostname()) {
		fmt.Fprintln(os.Stderr, "kiosk enroll: refusing plain http to", u.Host, "- the hub's answer is the kiosk's identity: use https")
		return 2
	}
	theCode, pin := protocol.SplitEnrollCode(*code)
	if *fingerprint != "" {
		pin = *fingerprint
	}
	if u.Scheme == "https" {
		if pin, err = protocol.ParseFingerprint(pin); err != nil {
			fmt.Fprintln(os.Stderr, "kiosk enroll: the hub's fingerprint: give the code as hub kiosk add printed it (CODE@FINGERPRINT), or --fingerprint:", err)
			return 2
		}
	} else {
		pin = ""
	}
	ctx, cancel := context.WithTimeout(context.Background(), *timeout)
	defer cancel()
	hubURL := strings.TrimSuffix(*hub, "/")
	var res *protocol.EnrollResult
	certDir := ""
	if *password {
		res, err = askHub(ctx, hubURL, theCode, pin)
	} else {
		certDir = filepath.Dir(*path)
		res, err = identity.Enroll(ctx, hubURL, theCode, pin, identity.In(certDir))
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "kiosk enroll:", err)
		return 1
	}
	e := enrollment{KioskID: res.KioskID, Store: res.Store, Broker: res.Broker, Username: res.Username, Password: res.Password,
		CertDir: certDir, Fingerprint: pin, OriginZIP: string(res.OriginZIP), Hub: hubURL, EnrolledAt: time.Now().UTC()}
	if e.Broker == "" {
		if certDir != "" {
			e.Broker = "mqtts://" + net.JoinHostPort(u.Hostname(), "8883")
		} else {
			e.Broker = "tcp://" + net.JoinHostPort(u.Hostname(), "1883")
		}
	}
	if err := writeEnrollment(*path, &e); err != nil {
		fmt.Fprintln(os.Stderr, "kiosk enroll:", err)
		return 1
	}
	fmt.Printf("enrolled as %s in store %s; broker %s; credentials in %s\n", e.KioskID, e.Store, e.Broker, *path)
	if certDir != "" {
		fmt.Printf("certificate until %s; the key stays in %s\n", certUntil(certDir), certDir)
	}
	return 0
}

func isLoopback(host string) bool {
	ip := net.ParseIP(host)
	return host == "localhost" || ip != nil && ip.IsLoopback()
}

// certUntil is when the enrolled certificate expires.
func certUntil(dir string) string {
	id, err := identity.Load(identity.In(dir), "", "", nil)
	if err != nil {
		return "?"
	}
	return id.Leaf().NotAfter.Format("2006-01-02 15:04 MST")
}

// askHub trades the code for a broker password, on a hub that allows them.
func askHub(ctx context.Context, hub, code, pin string) (*protocol.EnrollResult, error) {
	body, _ := json.Marshal(protocol.EnrollRequest{Code: code})
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, hub+protocol.EnrollPath, bytes.NewReader(body))
	if err != nil {
		return nil, err
	}
	req.Header.Set("Content-Type", "application/json")
	client := http.DefaultClient
	if pin != "" {
		client = &http.Client{Transport: &http.Transport{TLSClientConfig: protocol.PinnedTLS(pin)}}
	}
	resp, err := client.Do(req)
	if err != nil {
		return nil, fmt.Errorf("asking the hub: %w", err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, protocol.MaxMessageBytes))
	if err != nil {
		return nil, fmt.Errorf("reading the hub's answer: %w", err)
	}
	if resp.StatusCode != http.StatusOK {
		if pe := protocol.DecodeHTTPError(b); pe != nil {
			return nil, fmt.Errorf("the hub refused: %s: %s", pe.Code, pe.Message)
		}
		return nil, fmt.Errorf("the hub answered %s", resp.Status)
	}
	return protocol.DecodeEnrollResult(b)
}

// writeEnrollment writes e atomically with mode 0600, for the kiosk's
// service user.
func writeEnrollment(path string, e *enrollment) error {
	b, _ := json.MarshalIndent(e, "", "  ")
	return identity.WriteFile(path, append(b, '\n'), 0o600)
}

// readEnrollment reads what enrolling left; a missing file is
// fs.ErrNotExist. A file others may read is refused: it holds a password.
func readEnrollment(path string) (*enrollment, error) {
	fi, err := os.Stat(path)
	if err != nil {
		return nil, err
	}
	if fi.Mode().Perm()&0o077 != 0 {
		return nil, fmt.Errorf("enrollment %s: mode %v lets others read the password; chmod 600 it", path, fi.Mode().Perm())
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var e enrollment
	if err := json.Unmarshal(b, &e); err != nil {
		return nil, fmt.Errorf("enrollment %s: %w", path, err)
	}
	if e.KioskID == "" || e.Password == "" && e.CertDir == "" {
		return nil, fmt.Errorf("enrollment %s: no kiosk id, or neither a certificate nor a password", path)
	}
	return &e, nil
}
