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
	"syscall"
	"time"

	"github.com/frank-postage/frank/protocol"
)

// defaultEnrollment is where `kiosk enroll` keeps the credentials.
const defaultEnrollment = "/var/lib/frank/kiosk/enrollment.json"

// enrollment is what enrolling left on the device: who the kiosk is and
// how it logs in to the broker. Only the kiosk's user may read it.
type enrollment struct {
	KioskID    string    `json:"kiosk_id"`
	Store      string    `json:"store"`
	Broker     string    `json:"broker"`
	Username   string    `json:"username"`
	Password   string    `json:"password"`
	OriginZIP  string    `json:"origin_zip,omitempty"`
	Hub        string    `json:"hub"`
	EnrolledAt time.Time `json:"enrolled_at"`
}

// enroll runs `kiosk enroll --hub URL --code CODE`.
func enroll(args []string) int {
	fl := flag.NewFlagSet("kiosk enroll", flag.ContinueOnError)
	hub := fl.String("hub", "", "the hub's URL, like https://hub.example (required)")
	code := fl.String("code", "", "the one-time code `hub kiosk add` printed (required)")
	path := fl.String("enrollment", defaultEnrollment, "where to keep the credentials (mode 0600)")
	timeout := fl.Duration("timeout", 30*time.Second, "how long to wait for the hub")
	if err := fl.Parse(args); err != nil {
		return 2
	}
	u, err := url.Parse(*hub)
	if *hub == "" || *code == "" || err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		fmt.Fprintln(os.Stderr, "usage: kiosk enroll --hub https://hub.example --code XXXXX-XXXXX-XXXXX-XXXXX [--enrollment PATH]")
		return 2
	}
	if u.Scheme == "http" && !isLoopback(u.Hostname()) {
		fmt.Fprintln(os.Stderr, "kiosk enroll: warning: the hub's answer carries the broker password; use https outside a test bench")
	}
	ctx, cancel := context.WithTimeout(context.Background(), *timeout)
	defer cancel()
	res, err := askHub(ctx, strings.TrimSuffix(*hub, "/"), *code)
	if err != nil {
		fmt.Fprintln(os.Stderr, "kiosk enroll:", err)
		return 1
	}
	e := enrollment{KioskID: res.KioskID, Store: res.Store, Broker: res.Broker, Username: res.Username, Password: res.Password,
		OriginZIP: string(res.OriginZIP), Hub: *hub, EnrolledAt: time.Now().UTC()}
	if e.Broker == "" {
		e.Broker = "tcp://" + net.JoinHostPort(u.Hostname(), "1883")
	}
	if err := writeEnrollment(*path, &e); err != nil {
		fmt.Fprintln(os.Stderr, "kiosk enroll:", err)
		return 1
	}
	fmt.Printf("enrolled as %s in store %s; broker %s; credentials in %s\n", e.KioskID, e.Store, e.Broker, *path)
	return 0
}

func isLoopback(host string) bool {
	ip := net.ParseIP(host)
	return host == "localhost" || ip != nil && ip.IsLoopback()
}

// askHub trades the code for the credentials.
func askHub(ctx context.Context, hub, code string) (*protocol.EnrollResult, error) {
	body, _ := json.Marshal(protocol.EnrollRequest{Code: code})
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, hub+protocol.EnrollPath, bytes.NewReader(body))
	if err != nil {
		return nil, err
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil, fmt.Errorf("asking the hub: %w", err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, protocol.MaxMessageBytes))
	if err != nil {
		return nil, fmt.Errorf("reading the hub's answer: %w", err)
	}
	if resp.StatusCode != http.StatusOK {
		var pe protocol.Error
		if json.Unmarshal(b, &pe) == nil && pe.Code != "" {
			return nil, fmt.Errorf("the hub refused: %s: %s", pe.Code, pe.Message)
		}
		return nil, fmt.Errorf("the hub answered %s", resp.Status)
	}
	return protocol.DecodeEnrollResult(b)
}

// writeEnrollment writes e atomically with mode 0600. Run as root (an
// installer with sudo), the file goes to the owner of its directory, the
// kiosk's service user.
func writeEnrollment(path string, e *enrollment) error {
	dir := filepath.Dir(path)
	if err := os.MkdirAll(dir, 0o750); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	b, _ := json.MarshalIndent(e, "", "  ")
	tmp, err := os.CreateTemp(dir, ".enrollment-*")
	if err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	defer os.Remove(tmp.Name())
	if err := tmp.Chmod(0o600); err != nil {
		tmp.Close()
		return fmt.Errorf("write %s: %w", path, err)
	}
	if os.Geteuid() == 0 {
		if fi, err := os.Stat(dir); err == nil {
			if st, ok := fi.Sys().(*syscall.Stat_t); ok {
				if err := tmp.Chown(int(st.Uid), int(st.Gid)); err != nil {
					tmp.Close()
					return fmt.Errorf("write %s: %w", path, err)
				}
			}
		}
	}
	if _, err := tmp.Write(append(b, '\n')); err != nil {
		tmp.Close()
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	return nil
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
	if e.KioskID == "" || e.Password == "" {
		return nil, fmt.Errorf("enrollment %s: no kiosk id or password", path)
	}
	return &e, nil
}
