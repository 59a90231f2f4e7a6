package update

import (
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/frank-postage/frank/protocol"
)

// launchedEnv marks a process the launcher started: it runs, and launches
// nothing itself.
const launchedEnv = "FRANK_KIOSK_RELEASE"

// ExecPrefixEnv, for tests only, names an emulator to run release binaries
// with (qemu-aarch64-static on a machine without binfmt_misc); on a Pi the
// binaries are native.
const ExecPrefixEnv = "FRANK_KIOSK_EXEC_PREFIX"

// Launched returns the release this process was launched as, or "" for
// the packaged binary.
func Launched() string { return os.Getenv(launchedEnv) }

// Launch runs first in the packaged kiosk binary. It returns when this
// process is the one to run: no release is installed, none verifies, the
// kiosk has no release key, or this process was launched as one.
// Otherwise it runs the current release (exec), or supervises a release
// on trial, and does not return; a trial release that crashed too often,
// or is not healthy by its deadline, is rolled back first.
//
// A release runs only once its binary matches the signed manifest kept
// beside it, checked with the release key: the service can write the
// releases directory, and code planted there would otherwise run at
// every boot. One that does not is treated as a failed release: the
// previous release runs if it verifies, else the packaged binary.
func (s *Store) Launch(log *slog.Logger) error {
	if os.Getenv(launchedEnv) != "" || s.Dir == "" {
		return nil
	}
	if s.Key == nil {
		if cur := s.Current(); cur != "" {
			log.Error("no release key: running the packaged binary, not the current release", "current", cur)
		}
		return nil
	}
	t, err := s.Start(log)
	if err != nil {
		return err
	}
	if t != nil {
		err := s.verify(t.Version)
		if err == nil {
			return s.supervise(t, log)
		}
		log.Error("RELEASE NOT RUN: the binary on trial does not match its signed manifest; rolling back", "version", t.Version, "to", name(t.Previous), "err", err)
		if err := s.rollback(t, "its binary does not match its signed manifest"); err != nil {
			return fmt.Errorf("update: rollback: %w", err)
		}
	}
	if cur := s.verified(log); cur != "" {
		return s.exec(cur)
	}
	return nil
}

// verified returns the current release if it verifies. If not, current
// is pointed at the previous release, if that verifies, or at the
// packaged binary (""), which is returned.
func (s *Store) verified(log *slog.Logger) string {
	cur := s.Current()
	if cur == "" {
		return ""
	}
	err := s.verify(cur)
	if err == nil {
		return cur
	}
	to := ""
	if t, lerr := os.Readlink(s.path("previous")); lerr == nil && filepath.Base(t) != cur {
		prev := filepath.Base(t)
		if perr := s.verify(prev); perr == nil {
			to = prev
		} else {
			log.Error("RELEASE NOT RUN: the previous release does not match its signed manifest either", "version", prev, "err", perr)
		}
	}
	log.Error("RELEASE NOT RUN: the current release does not match its signed manifest; its directory may have been tampered with", "version", cur, "running", name(to), "err", err)
	if err := s.point("current", to); err != nil {
		log.Error("current release not pointed at the one running", "to", name(to), "err", err)
	}
	return to
}

// verify checks version's binary against the manifest kept beside it
// (release.json): signed with the release key, for this version, with
// the binary's size and SHA-256, and not signed before the packaged
// binary was built (whoever can write here can write proven.json too,
// but not the packaged binary's date). About a second for 24 MB on a Pi,
// once per start.
func (s *Store) verify(version string) error {
	var rec record
	if err := readJSON(s.path("versions", version, "release.json"), &rec); err != nil {
		return fmt.Errorf("update: verify %s: %w", version, err)
	}
	m, err := protocol.VerifyRelease(s.Key, rec.Manifest, rec.Signature)
	if err != nil {
		return fmt.Errorf("update: verify %s: %w", version, err)
	}
	a, ok := m.For(rec.Arch)
	if m.Version != version || !ok {
		return fmt.Errorf("update: verify %s: the manifest kept is release %s's, for %v", version, m.Version, m.Artifacts)
	}
	if m.Created.Before(s.Packaged) {
		return fmt.Errorf("update: verify %s: signed %s, before the packaged binary was built (%s)", version, m.Created.UTC().Format(time.RFC3339), s.Packaged.UTC().Format(time.RFC3339))
	}
	sum, n, err := hashFile(s.BinaryOf(version))
	if err != nil {
		return fmt.Errorf("update: verify %s: %w", version, err)
	}
	if sum != a.SHA256 || n != a.Size {
		return fmt.Errorf("update: verify %s: the binary (%d bytes, SHA-256 %s) is not the signed one (%d bytes, %s)", version, n, sum, a.Size, a.SHA256)
	}
	return nil
}

// Start is what the launcher decides at a start, before it runs anything:
// it returns the release on trial to supervise, or nil to run the current
// release. A trial whose health check passed (a power cut came before its
// record was removed) ends healthy; one that crashed too often, or is past
// its deadline, is rolled back first.
func (s *Store) Start(log *slog.Logger) (*Trial, error) {
	t := s.Trial()
	if t == nil || t.Version != s.Current() {
		return nil, nil
	}
	if s.passed(t) {
		log.Info("release on trial passed its health check before the power cut; its trial ends", "version", t.Version)
		if err := s.prove(t); err != nil {
			return nil, fmt.Errorf("update: launch: %w", err)
		}
		if err := s.endTrial(); err != nil {
			return nil, fmt.Errorf("update: launch: %w", err)
		}
		return nil, nil
	}
	t.Attempts++
	if err := writeJSON(s.path("trial.json"), t); err != nil {
		return nil, fmt.Errorf("update: launch: %w", err)
	}
	switch {
	case t.Attempts > maxAttempts:
		log.Error("release on trial failed to start; rolling back", "version", t.Version, "starts", t.Attempts-1, "to", name(t.Previous))
		if err := s.rollback(t, fmt.Sprintf("it stopped %d times before its health check", maxAttempts)); err != nil {
			return nil, fmt.Errorf("update: rollback: %w", err)
		}
	case t.Health <= 0 && time.Now().After(t.Deadline): // a trial from before Health
		log.Error("release on trial not healthy by its deadline; rolling back", "version", t.Version, "to", name(t.Previous))
		if err := s.rollback(t, "no health check passed by its deadline"); err != nil {
			return nil, fmt.Errorf("update: rollback: %w", err)
		}
	default:
		return t, nil
	}
	return nil, nil
}

// ownTrial reports whether t is still the trial on disk: not ended by
// its health check (its healthy outcome recorded, even if a power cut
// left the trial record), nor replaced by a later install.
func (s *Store) ownTrial(t *Trial) bool {
	d := s.Trial()
	return d != nil && d.Version == t.Version && d.CommandID == t.CommandID && !s.passed(d)
}

func name(version string) string {
	if version == "" {
		return "the packaged binary"
	}
	return version
}

// command is how a release binary runs: itself, or under ExecPrefixEnv.
func (s *Store) command(version string) (string, []string) {
	argv := append([]string{s.BinaryOf(version)}, os.Args[1:]...)
	if p := strings.Fields(os.Getenv(ExecPrefixEnv)); len(p) > 0 {
		argv = append(p, argv...)
	}
	path, err := exec.LookPath(argv[0])
	if err != nil {
		path = argv[0]
	}
	return path, argv
}

// exec replaces this process with a release.
func (s *Store) exec(version string) error {
	path, argv := s.command(version)
	env := append(os.Environ(), launchedEnv+"="+version)
	return fmt.Errorf("update: exec %s: %w", version, syscall.Exec(path, argv, env))
}

// supervise runs a release on trial as a child until it exits (its status
// becomes this process's, and systemd starts the launcher again) or its
// deadline passes unhealthy: then the child is stopped, the previous
// release put back, and the launcher starts again.
func (s *Store) supervise(t *Trial, log *slog.Logger) error {
	path, argv := s.command(t.Version)
	cmd := exec.Command(path, argv[1:]...)
	cmd.Env = append(os.Environ(), launchedEnv+"="+t.Version)
	cmd.Stdin, cmd.Stdout, cmd.Stderr = os.Stdin, os.Stdout, os.Stderr
	// A launcher killed outright takes its release with it.
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("update: start %s: %w", t.Version, err)
	}
	log.Info("release on trial started", "version", t.Version, "health", t.Health, "start", t.Attempts)
	launched := time.Now() // monotonic: a step of the wall clock moves no deadline
	overdue := func() bool {
		if t.Health > 0 {
			return time.Since(launched) > t.Health
		}
		return time.Now().After(t.Deadline)
	}
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, syscall.SIGTERM, syscall.SIGINT)
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	tick := time.NewTicker(250 * time.Millisecond)
	defer tick.Stop()
	for {
		select {
		case sig := <-sigs:
			cmd.Process.Signal(sig)
		case err := <-exited:
			code := 0
			if ee := (*exec.ExitError)(nil); errors.As(err, &ee) {
				code = ee.ExitCode()
			}
			os.Exit(code)
		case <-tick.C:
			if s.ownTrial(t) && overdue() {
				log.Error("release on trial not healthy by its deadline; rolling back", "version", t.Version, "to", name(t.Previous))
				cmd.Process.Signal(syscall.SIGTERM)
				select {
				case <-exited:
				case <-time.After(10 * time.Second):
					cmd.Process.Kill()
					<-exited
				}
				// The release may have passed its health check as the
				// deadline came, and told the hub so: it has stopped now,
				// and the launcher's Start keeps it.
				if s.passed(t) {
					log.Info("release on trial passed its health check at its deadline; kept", "version", t.Version)
				} else if err := s.rollback(t, "no health check passed by its deadline"); err != nil {
					return fmt.Errorf("update: rollback: %w", err)
				}
				self, _ := os.Executable()
				argv := append([]string{self}, os.Args[1:]...)
				if p := strings.Fields(os.Getenv(ExecPrefixEnv)); len(p) > 0 {
					argv = append(p, argv...)
				}
				path, err := exec.LookPath(argv[0])
				if err != nil {
					path = argv[0]
				}
				return fmt.Errorf("update: restart: %w", syscall.Exec(path, argv, os.Environ()))
			}
		}
	}
}
