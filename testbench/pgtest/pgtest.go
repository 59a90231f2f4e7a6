// Package pgtest starts a throwaway PostgreSQL server from the Debian
// package's binaries, for tests and benchmarks. As root it runs the server as
// the postgres user, since PostgreSQL refuses to run as root.
package pgtest

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"net/url"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	_ "github.com/jackc/pgx/v5/stdlib" // driver "pgx"

	"github.com/frank-postage/frank/testbench/wait"
)

// ErrMissing says what to install.
var ErrMissing = errors.New("pgtest: PostgreSQL server binaries not found; install Debian package postgresql (make test does, as root)")

// Server is a running PostgreSQL.
type Server struct {
	// URL connects to the postgres database as the postgres superuser.
	URL      string
	settings []string
	cmd      *exec.Cmd
	done     chan struct{}
	dir      string
}

func binDir() (string, error) {
	ms, _ := filepath.Glob("/usr/lib/postgresql/*/bin/initdb")
	if len(ms) == 0 {
		return "", ErrMissing
	}
	sort.Strings(ms)
	return filepath.Dir(ms[len(ms)-1]), nil
}

// Start initializes a cluster in a new directory and starts it listening
// on a Unix socket there, with settings ("name=value") added to the
// server's command line. Stop it when done.
func Start(settings ...string) (*Server, error) {
	s, bin, cred, err := newServer()
	if err != nil {
		return nil, err
	}
	initdb := exec.Command(filepath.Join(bin, "initdb"), "-D", filepath.Join(s.dir, "data"), "-A", "trust", "-U", "postgres", "--no-sync", "-E", "UTF8")
	initdb.SysProcAttr = &syscall.SysProcAttr{Credential: cred}
	if out, err := initdb.CombinedOutput(); err != nil {
		os.RemoveAll(s.dir)
		return nil, fmt.Errorf("pgtest: initdb: %w: %s", err, out)
	}
	s.settings = settings
	return s, s.run(bin, cred)
}

// StartStandby starts a streaming replica of s, from a base backup, in a
// new directory. It is a hot standby: it takes reads until promoted.
func (s *Server) StartStandby() (*Server, error) {
	r, bin, cred, err := newServer()
	if err != nil {
		return nil, err
	}
	backup := exec.Command(filepath.Join(bin, "pg_basebackup"), "-D", filepath.Join(r.dir, "data"), "-h", s.dir, "-U", "postgres",
		"-R", "-X", "stream", "--no-sync")
	backup.SysProcAttr = &syscall.SysProcAttr{Credential: cred}
	if out, err := backup.CombinedOutput(); err != nil {
		os.RemoveAll(r.dir)
		return nil, fmt.Errorf("pgtest: pg_basebackup: %w: %s", err, out)
	}
	return r, r.run(bin, cred)
}

// SyncStandby makes s wait for a standby to hold every commit before it
// reports it done (synchronous_standby_names '*').
func (s *Server) SyncStandby() error {
	db, err := sql.Open("pgx", s.URL)
	if err != nil {
		return err
	}
	defer db.Close()
	for _, q := range []string{`ALTER SYSTEM SET synchronous_standby_names = '*'`, `SELECT pg_reload_conf()`} {
		if _, err := db.Exec(q); err != nil {
			return fmt.Errorf("pgtest: sync standby: %w", err)
		}
	}
	return nil
}

// Promote makes a standby the primary and waits until it takes writes.
func (s *Server) Promote() error {
	db, err := sql.Open("pgx", s.URL)
	if err != nil {
		return err
	}
	defer db.Close()
	var ok bool
	if err := db.QueryRow(`SELECT pg_promote(true, 60)`).Scan(&ok); err != nil || !ok {
		return fmt.Errorf("pgtest: promote: %v %w", ok, err)
	}
	return nil
}

// Kill stops the server with SIGKILL, as a crash would, and keeps its
// files.
func (s *Server) Kill() {
	s.cmd.Process.Kill()
	<-s.done
}

// MultiHostURL connects to database name on whichever of servers takes
// writes, as a hub does in front of a primary and its standby.
func MultiHostURL(name string, servers ...*Server) string {
	var hosts []string
	for _, s := range servers {
		hosts = append(hosts, s.dir)
	}
	return (&url.URL{Scheme: "postgres", User: url.User("postgres"), Path: "/" + name,
		RawQuery: url.Values{"host": {strings.Join(hosts, ",")}, "sslmode": {"disable"}, "target_session_attrs": {"read-write"}}.Encode()}).String()
}

// newServer makes the directory of a server to be, owned by the postgres
// user when running as root.
func newServer() (*Server, string, *syscall.Credential, error) {
	bin, err := binDir()
	if err != nil {
		return nil, "", nil, err
	}
	dir, err := os.MkdirTemp("", "frank-pg")
	if err != nil {
		return nil, "", nil, err
	}
	s := &Server{dir: dir, done: make(chan struct{})}
	var cred *syscall.Credential
	if os.Getuid() == 0 {
		u, err := user.Lookup("postgres")
		if err != nil {
			return nil, "", nil, fmt.Errorf("pgtest: running as root needs the postgres user: %w", err)
		}
		uid, _ := strconv.Atoi(u.Uid)
		gid, _ := strconv.Atoi(u.Gid)
		cred = &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid)}
		if err := os.Chmod(dir, 0o755); err != nil {
			return nil, "", nil, err
		}
		if err := os.Chown(dir, uid, gid); err != nil {
			return nil, "", nil, err
		}
	}
	return s, bin, cred, nil
}

// run starts postgres on the server's data and waits until it answers.
func (s *Server) run(bin string, cred *syscall.Credential) error {
	dir, data := s.dir, filepath.Join(s.dir, "data")
	log, err := os.Create(filepath.Join(dir, "postgres.log"))
	if err != nil {
		return err
	}
	// Only a Unix socket in the server's own directory: a TCP port probed
	// free can be taken by another package's test before the server binds.
	args := []string{"-D", data, "-k", dir, "-c", "listen_addresses=", "-c", "max_connections=200", "-c", "shared_buffers=64MB"}
	for _, kv := range s.settings {
		args = append(args, "-c", kv)
	}
	s.cmd = exec.Command(filepath.Join(bin, "postgres"), args...)
	s.cmd.Stdout, s.cmd.Stderr = log, log
	s.cmd.SysProcAttr = &syscall.SysProcAttr{Credential: cred, Pdeathsig: syscall.SIGKILL}
	if err := s.cmd.Start(); err != nil {
		return fmt.Errorf("pgtest: start postgres: %w", err)
	}
	go func() { s.cmd.Wait(); log.Close(); close(s.done) }()
	s.URL = s.dbURL("postgres")
	exited := false
	err = wait.Poll(30*time.Second, func() error {
		select {
		case <-s.done:
			exited = true
			return nil
		default:
		}
		db, err := sql.Open("pgx", s.URL)
		if err != nil {
			return err
		}
		defer db.Close()
		return db.PingContext(context.Background())
	})
	if exited {
		b, _ := os.ReadFile(filepath.Join(dir, "postgres.log"))
		return fmt.Errorf("pgtest: postgres exited: %s", b)
	}
	if err != nil {
		s.Stop()
		return fmt.Errorf("pgtest: postgres did not accept connections in 30 s: %w", err)
	}
	return nil
}

// NewDatabase creates an empty database and returns its URL.
func (s *Server) NewDatabase(name string) (string, error) {
	db, err := sql.Open("pgx", s.URL)
	if err != nil {
		return "", err
	}
	defer db.Close()
	if _, err := db.Exec(`CREATE DATABASE "` + name + `"`); err != nil {
		return "", fmt.Errorf("pgtest: create database %s: %w", name, err)
	}
	return s.dbURL(name), nil
}

func (s *Server) dbURL(name string) string {
	return (&url.URL{Scheme: "postgres", User: url.User("postgres"), Path: "/" + name,
		RawQuery: url.Values{"host": {s.dir}, "sslmode": {"disable"}}.Encode()}).String()
}

// PID is the postmaster's process id.
func (s *Server) PID() int { return s.cmd.Process.Pid }

// LogPath is the server's log file.
func (s *Server) LogPath() string { return filepath.Join(s.dir, "postgres.log") }

// Stop shuts the server down and removes its files.
func (s *Server) Stop() {
	if s.cmd != nil && s.cmd.Process != nil {
		s.cmd.Process.Signal(syscall.SIGINT) // fast shutdown
		select {
		case <-s.done:
		case <-time.After(10 * time.Second):
			s.cmd.Process.Kill()
			<-s.done
		}
	}
	os.RemoveAll(s.dir)
}

// shared is the one server a test binary's tests share.
var shared struct {
	mu  sync.Mutex
	s   *Server
	err error
	n   int
}

// NewTestDatabase creates a fresh database on the test binary's shared
// server, which starts at its first use, and returns its URL. Starting a
// server costs seconds; a database, milliseconds. The package's TestMain
// stops the server with Main. (Notifications and advisory locks are per
// database, so tests on the shared server do not hear each other.)
func NewTestDatabase(t testing.TB) string {
	t.Helper()
	shared.mu.Lock()
	if shared.s == nil && shared.err == nil {
		shared.s, shared.err = Start()
	}
	shared.n++
	s, err, n := shared.s, shared.err, shared.n
	shared.mu.Unlock()
	if err != nil {
		t.Fatalf("postgres: %v", err)
	}
	dsn, err := s.NewDatabase(fmt.Sprintf("test%d", n))
	if err != nil {
		t.Fatal(err)
	}
	return dsn
}

// Main runs a package's tests, then stops the shared server if they
// started it: call os.Exit(pgtest.Main(m)) from TestMain.
func Main(m *testing.M) int {
	code := m.Run()
	shared.mu.Lock()
	defer shared.mu.Unlock()
	if shared.s != nil {
		shared.s.Stop()
		shared.s = nil
	}
	return code
}

// ForEachStore runs test as subtest "sqlite" on a new SQLite file and as
// "postgres" on a new database of the shared server (see Main).
func ForEachStore(t *testing.T, test func(t *testing.T, dsn string)) {
	t.Helper()
	t.Run("sqlite", func(t *testing.T) { test(t, filepath.Join(t.TempDir(), "hub.db")) })
	t.Run("postgres", func(t *testing.T) { test(t, NewTestDatabase(t)) })
}
