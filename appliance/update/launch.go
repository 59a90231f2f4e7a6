package update

import (
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"os/signal"
	"strings"
	"syscall"
	"time"
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
// process is the one to run: no release is installed, or this process was
// launched as one. Otherwise it runs the current release (exec), or
// supervises a release on trial, and does not return; a trial release
// that crashed too often, or is not healthy by its deadline, is rolled
// back first.
func (s *Store) Launch(log *slog.Logger) error {
	if os.Getenv(launchedEnv) != "" || s.Dir == "" {
		return nil
	}
	t, err := s.Start(log)
	if err != nil {
		return err
	}
	if t != nil {
		return s.supervise(t, log)
	}
	if cur := s.Current(); cur != "" {
		return s.exec(cur)
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
	case time.Now().After(t.Deadline):
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
	log.Info("release on trial started", "version", t.Version, "deadline", t.Deadline, "start", t.Attempts)
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
			if s.ownTrial(t) && time.Now().After(t.Deadline) {
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
