// Package update installs signed releases of the kiosk firmware, A/B: each
// release lives in its own directory beside the one running, a symlink
// names the current one, and a new release runs on trial until it passes
// its health check. The kiosk binary from the Debian package is the
// launcher: started by systemd, it runs the current release, supervises a
// release on trial, and rolls back to the previous one when the trial
// release crashes three times or is not healthy by its deadline.
//
// Every step survives a power cut: a download resumes from its partial
// file, a binary is verified and renamed into place before anything points
// at it, the trial record is written before the symlink moves, and a
// symlink moves by an atomic rename.
//
// The releases share the root filesystem with the sale journal: Stage
// refuses a release that would not leave journalReserve free, and once a
// release is healthy every version but the current, previous and proven
// ones is deleted.
//
// The directory is the service's to write, so the launcher runs a release
// only once its binary matches the signed manifest kept beside it
// (release.json), checked again with the release key at every start.
//
// A kiosk never goes back to an older release: Stage refuses a release
// whose signed Created is earlier than that of the release running, or of
// any release that passed its health check here (proven.json). A rollback
// ops want is the old build signed again, as a new release. The
// launcher's own rollback of a release that failed its trial is local and
// not an offer: it is never refused.
package update

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"syscall"
	"time"

	"github.com/frank-postage/frank/appliance/identity"
	"github.com/frank-postage/frank/protocol"
)

// Binary is the kiosk binary's name inside a release's directory.
const Binary = "frank-kiosk"

// maxAttempts is how many times a release on trial may start before it
// is rolled back.
const maxAttempts = 3

// journalReserve is what a staged release must leave free on its
// filesystem: the sale journal lives there too, and a kiosk whose journal
// cannot grow stops selling.
const journalReserve = 64 << 20

// Store is the releases directory.
type Store struct {
	Dir string
	Key ed25519.PublicKey // the release key; nil refuses every release and runs only the packaged binary
	// Packaged is when the packaged binary was built (its commit date,
	// stamped in at build time): the floor while no release has passed a
	// health check here. Zero (a dev build) takes the first release
	// offered.
	Packaged time.Time
	// Log gets what no caller has to act on (an old release not
	// deleted); nil is slog.Default().
	Log *slog.Logger

	freeSpace func(dir string) (uint64, error) // nil: statfs; tests set it
}

// NoSpaceError is a release refused because its binary would not leave
// journalReserve free. The hub gets it as update_failed: it unwraps to a
// *protocol.Error.
type NoSpaceError struct {
	Version string
	Need    uint64 // bytes: the rest of the binary plus the reserve
	Free    uint64 // bytes available
}

func (e *NoSpaceError) Error() string {
	return fmt.Sprintf("release %s needs %d MiB free (its binary and %d MiB kept for the sale journal); %d MiB are",
		e.Version, e.Need>>20, journalReserve>>20, e.Free>>20)
}

func (e *NoSpaceError) Unwrap() error {
	return &protocol.Error{Code: protocol.CodeUpdateFailed, Message: e.Error()}
}

// Signed is what a kiosk keeps of a release's manifest: its version and
// when ops signed it, in versions/V/release.json and, for the newest
// release that passed its health check here, proven.json.
type Signed struct {
	Version string    `json:"version"`
	Created time.Time `json:"created"`
}

// record is versions/V/release.json: Signed, and the manifest as signed,
// so that the launcher can check the binary again before it runs it.
type record struct {
	Signed
	Arch      string `json:"arch,omitempty"`
	Manifest  []byte `json:"manifest,omitempty"`
	Signature []byte `json:"signature,omitempty"`
}

// Trial is a release installed and not yet healthy.
type Trial struct {
	Version   string    `json:"version"`
	Previous  string    `json:"previous"` // "" is the packaged binary
	CommandID string    `json:"command_id"`
	Deadline  time.Time `json:"deadline"`
	// Health is the running time each start of the release has to pass
	// its health check, judged on the launcher's monotonic clock: a Pi's
	// wall clock steps when NTP first syncs after a start on a saved
	// time, and a release installed before that was rolled back at its
	// first start, never run. Deadline, on the wall clock, is shown, and
	// judges a trial recorded before Health was.
	Health   time.Duration `json:"health,omitempty"`
	Attempts int           `json:"attempts"`
	Created  time.Time     `json:"created,omitzero"` // the release's signed Created, if staged with it
}

// Outcome is how an update ended: ok (the release runs and passed its
// health check) or rolled_back.
type Outcome struct {
	CommandID string    `json:"command_id"`
	Version   string    `json:"version"`
	Status    string    `json:"status"`
	Why       string    `json:"why,omitempty"`
	At        time.Time `json:"at"`
}

// Outcome statuses.
const (
	Healthy    = "ok"
	RolledBack = "rolled_back"
)

func (s *Store) path(parts ...string) string {
	return filepath.Join(append([]string{s.Dir}, parts...)...)
}

// BinaryOf is where a release's binary lives.
func (s *Store) BinaryOf(version string) string { return s.path("versions", version, Binary) }

// Current returns the version the current symlink names, or "" for the
// packaged binary.
func (s *Store) Current() string {
	t, err := os.Readlink(s.path("current"))
	if err != nil {
		return ""
	}
	return filepath.Base(t)
}

// Stage verifies an offered release and downloads its binary for arch
// from base+offer.Path+"/"+arch, resuming a partial download. It returns
// the manifest once the binary is in place with the signed size and hash.
// A release signed before Floor's is refused (update_failed), before any
// download.
func (s *Store) Stage(ctx context.Context, client *http.Client, base string, offer *protocol.ReleaseOffer, arch string) (*protocol.ReleaseManifest, error) {
	if s.Key == nil {
		return nil, protocol.Errorf(protocol.CodeUpdateFailed, "this kiosk has no release key: it installs no release")
	}
	m, err := protocol.VerifyRelease(s.Key, offer.Manifest, offer.Signature)
	if err != nil {
		return nil, protocol.Errorf(protocol.CodeUpdateFailed, "release refused: %v", err)
	}
	a, ok := m.For(arch)
	if !ok {
		return nil, protocol.Errorf(protocol.CodeUpdateFailed, "release %s has no %s binary", m.Version, arch)
	}
	// A replayed offer, or a compromised hub, could otherwise put back any
	// old (vulnerable) release ever signed.
	if f := s.Floor(); m.Created.Before(f.Created) {
		return nil, protocol.Errorf(protocol.CodeUpdateFailed,
			"release %s (signed %s) is older than %s (signed %s), which this kiosk runs or ran healthy: a downgrade is refused; to roll back, sign the old build again as a new release",
			m.Version, m.Created.UTC().Format(time.RFC3339), f.Version, f.Created.UTC().Format(time.RFC3339))
	}
	final := s.BinaryOf(m.Version)
	info := s.path("versions", m.Version, "release.json")
	rec := record{Signed: Signed{Version: m.Version, Created: m.Created}, Arch: arch, Manifest: offer.Manifest, Signature: offer.Signature}
	if sum, n, err := hashFile(final); err == nil && sum == a.SHA256 && n == a.Size {
		var have record
		if readJSON(info, &have) == nil && have.Created.Equal(m.Created) && bytes.Equal(have.Manifest, rec.Manifest) && have.Arch == arch {
			return m, nil
		}
		// Signed again (a rollback ops made): the same binary, newer.
		if err := writeJSON(info, rec); err != nil {
			return nil, fmt.Errorf("update: stage: %w", err)
		}
		return m, nil
	}
	if err := os.MkdirAll(filepath.Dir(final), 0o755); err != nil {
		return nil, fmt.Errorf("update: stage: %w", err)
	}
	// Room first: releases not kept, and another release's partial download.
	if err := s.prune(m.Version); err != nil {
		s.log().Warn("old releases not all deleted", "err", err)
	}
	part := final + ".part"
	var have int64
	if fi, err := os.Stat(part); err == nil && fi.Size() <= a.Size {
		have = fi.Size()
	}
	need := uint64(a.Size-have) + journalReserve
	free, err := s.free()
	if err != nil {
		return nil, fmt.Errorf("update: stage %s: free space: %w", m.Version, err)
	}
	if free < need {
		return nil, fmt.Errorf("update: stage: %w", &NoSpaceError{Version: m.Version, Need: need, Free: free})
	}
	if err := download(ctx, client, base+offer.Path+"/"+arch, part, a.Size); err != nil {
		if errors.Is(err, syscall.ENOSPC) {
			// A partial file kept would hold the journal's room until the
			// next offer; the next attempt starts over.
			os.Remove(part)
			free, _ := s.free()
			return nil, fmt.Errorf("update: stage: %w: %w", &NoSpaceError{Version: m.Version, Need: need, Free: free}, err)
		}
		return nil, fmt.Errorf("update: stage %s: %w", m.Version, err)
	}
	sum, n, err := hashFile(part)
	if err != nil {
		return nil, fmt.Errorf("update: stage: %w", err)
	}
	if sum != a.SHA256 || n != a.Size {
		os.Remove(part) // a bad download starts over
		return nil, protocol.Errorf(protocol.CodeUpdateFailed, "release %s: the %s binary's hash or size is not the signed one", m.Version, arch)
	}
	if err := os.Chmod(part, 0o755); err != nil {
		return nil, fmt.Errorf("update: stage: %w", err)
	}
	// Before the binary: a release's binary in place has its Created and
	// its signed manifest.
	if err := writeJSON(info, rec); err != nil {
		return nil, fmt.Errorf("update: stage: %w", err)
	}
	if err := os.Rename(part, final); err != nil {
		return nil, fmt.Errorf("update: stage: %w", err)
	}
	return m, identity.SyncDir(filepath.Dir(final))
}

// download fetches url into part, appending to what an earlier attempt
// left, up to size bytes.
func download(ctx context.Context, client *http.Client, url, part string, size int64) error {
	f, err := os.OpenFile(part, os.O_CREATE|os.O_WRONLY, 0o644)
	if err != nil {
		return err
	}
	defer f.Close()
	have, err := f.Seek(0, io.SeekEnd)
	if err != nil {
		return err
	}
	if have > size {
		// Not this release's: start over, at the next attempt. An error,
		// not the empty file, which the hash check would fail for good.
		if err := f.Truncate(0); err != nil {
			return err
		}
		return fmt.Errorf("partial download longer than the release (%d of %d bytes): starting over", have, size)
	}
	if have == size {
		return nil
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return err
	}
	if have > 0 {
		req.Header.Set("Range", "bytes="+strconv.FormatInt(have, 10)+"-")
	}
	resp, err := client.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	switch resp.StatusCode {
	case http.StatusPartialContent:
	case http.StatusOK: // the server would not resume: from the start
		if have > 0 {
			if err := f.Truncate(0); err != nil {
				return err
			}
			if _, err := f.Seek(0, io.SeekStart); err != nil {
				return err
			}
		}
	default:
		return fmt.Errorf("GET %s: %s", url, resp.Status)
	}
	n, err := io.Copy(f, io.LimitReader(resp.Body, size-have+1))
	if err != nil {
		return err
	}
	if have+n > size {
		// More than the rest: the server's range is not ours to trust.
		// Start over at the next attempt rather than fail the hash check
		// for good.
		if err := f.Truncate(0); err != nil {
			return err
		}
		return fmt.Errorf("GET %s: more than the %d bytes left: starting over", url, size-have)
	}
	return f.Sync()
}

func hashFile(path string) (string, int64, error) {
	f, err := os.Open(path)
	if err != nil {
		return "", 0, err
	}
	defer f.Close()
	h := sha256.New()
	n, err := io.Copy(h, f)
	return hex.EncodeToString(h.Sum(nil)), n, err
}

// ErrOnTrial is an install refused because the release running is itself
// on trial: its fallback is the last release that passed a health check,
// and only its own trial may end it (healthy, or rolled back). Try again
// once it has ended.
var ErrOnTrial = errors.New("update: the release running is on trial")

// Install puts a staged release on trial: it runs from the next start,
// which must pass its health check within health. It refuses (ErrOnTrial)
// while the current release is on trial.
func (s *Store) Install(commandID, version string, health time.Duration) error {
	if t := s.Trial(); t != nil && t.Version == s.Current() {
		return fmt.Errorf("update: install %s: %s until %s: %w", version, t.Version, t.Deadline.UTC().Format(time.RFC3339), ErrOnTrial)
	}
	if _, err := os.Stat(s.BinaryOf(version)); err != nil {
		return fmt.Errorf("update: install %s: %w", version, err)
	}
	t := Trial{Version: version, Previous: s.Current(), CommandID: commandID, Deadline: time.Now().Add(health), Health: health}
	var info Signed
	if readJSON(s.path("versions", version, "release.json"), &info) == nil && info.Version == version {
		t.Created = info.Created
	}
	if err := writeJSON(s.path("trial.json"), t); err != nil {
		return fmt.Errorf("update: install %s: %w", version, err)
	}
	os.Remove(s.path("outcome.json"))
	if err := s.point("previous", t.Previous); err != nil {
		return fmt.Errorf("update: install %s: %w", version, err)
	}
	if err := s.point("current", version); err != nil {
		return fmt.Errorf("update: install %s: %w", version, err)
	}
	return nil
}

// point makes the symlink name (current, previous) name version, or
// removes it for the packaged binary, atomically.
func (s *Store) point(name, version string) error {
	if version == "" {
		if err := os.Remove(s.path(name)); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return err
		}
		return identity.SyncDir(s.Dir)
	}
	tmp := s.path(name + ".new")
	os.Remove(tmp)
	if err := os.Symlink(filepath.Join("versions", version), tmp); err != nil {
		return err
	}
	if err := os.Rename(tmp, s.path(name)); err != nil {
		return err
	}
	return identity.SyncDir(s.Dir)
}

// Trial returns the release on trial, or nil.
func (s *Store) Trial() *Trial {
	var t Trial
	if readJSON(s.path("trial.json"), &t) != nil {
		return nil
	}
	return &t
}

// DropTrial forgets a trial whose release never became current (a power
// cut before the symlink moved): the launcher passes it over, and nothing
// else would end it.
func (s *Store) DropTrial() error {
	if err := os.Remove(s.path("trial.json")); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("update: drop trial: %w", err)
	}
	if err := identity.SyncDir(s.Dir); err != nil {
		return fmt.Errorf("update: drop trial: %w", err)
	}
	return nil
}

// MarkHealthy ends the trial of version, which the running kiosk is: it
// passed its health check.
func (s *Store) MarkHealthy(version string) error {
	for _, step := range s.HealthySteps(version) {
		if err := step(); err != nil {
			return fmt.Errorf("update: healthy: %w", err)
		}
	}
	return nil
}

// prune deletes every version directory but those of the current and
// previous releases, the proven one (the floor's), a trial's two, and
// keep (a release being staged): on a 2 GB card shared with the sale
// journal, releases kept forever would fill it. A partial download of
// another release goes with its directory.
func (s *Store) prune(keep string) error {
	keeps := map[string]bool{keep: true, s.Current(): true}
	if t, err := os.Readlink(s.path("previous")); err == nil {
		keeps[filepath.Base(t)] = true
	}
	var p Signed
	if readJSON(s.path("proven.json"), &p) == nil {
		keeps[p.Version] = true
	}
	if t := s.Trial(); t != nil {
		keeps[t.Version], keeps[t.Previous] = true, true
	}
	dirs, err := os.ReadDir(s.path("versions"))
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return nil
		}
		return fmt.Errorf("update: prune: %w", err)
	}
	var errs []error
	for _, d := range dirs {
		if keeps[d.Name()] {
			continue
		}
		if err := os.RemoveAll(s.path("versions", d.Name())); err != nil {
			errs = append(errs, err)
		}
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("update: prune: %w", err)
	}
	return nil
}

// free is how many bytes the releases' filesystem has for the service
// (not those kept for root).
func (s *Store) free() (uint64, error) {
	if s.freeSpace != nil {
		return s.freeSpace(s.Dir)
	}
	var st syscall.Statfs_t
	if err := syscall.Statfs(s.Dir, &st); err != nil {
		return 0, err
	}
	return uint64(st.Bavail) * uint64(st.Bsize), nil
}

func (s *Store) log() *slog.Logger {
	if s.Log != nil {
		return s.Log
	}
	return slog.Default()
}

// HealthySteps are MarkHealthy's steps in order, each durable once done
// (none if version is not on trial): a power cut may stop them after any
// one, and the launcher's next Start finds the trial still running (the
// cut came before the healthy outcome was recorded) or ended healthy. The
// outcome is the commit: once it is on disk the release stays, even past
// its deadline, so a kiosk that told the hub ok never rolls back.
func (s *Store) HealthySteps(version string) []func() error {
	t := s.Trial()
	if t == nil || t.Version != version {
		return nil
	}
	return []func() error{
		func() error {
			return writeJSON(s.path("outcome.json"), Outcome{CommandID: t.CommandID, Version: version, Status: Healthy, At: time.Now().UTC()})
		},
		func() error { return s.prove(t) },
		// While the trial is on disk, so no Stage runs meanwhile. A
		// release left over (an error, a cut) goes at the next Stage or
		// health check, and fails neither this one nor the health check.
		func() error {
			if err := s.prune(""); err != nil {
				s.log().Warn("old releases not all deleted", "err", err)
			}
			return nil
		},
		s.endTrial,
	}
}

// prove raises the floor (proven.json) to trial t's release, which passed
// its health check: no older release is taken from now on, even after it
// is rolled back from or replaced.
func (s *Store) prove(t *Trial) error {
	if t.Created.IsZero() {
		return nil // staged before releases kept their Created
	}
	var p Signed
	if readJSON(s.path("proven.json"), &p) == nil && !t.Created.After(p.Created) {
		return nil
	}
	return writeJSON(s.path("proven.json"), Signed{Version: t.Version, Created: t.Created})
}

// Floor is the newest release this kiosk runs or ran healthy: that of
// proven.json or the current release (the packaged binary's, if known),
// whichever was signed later. Zero when none is known.
func (s *Store) Floor() Signed {
	var f, cur Signed
	readJSON(s.path("proven.json"), &f)
	if v := s.Current(); v != "" {
		readJSON(s.path("versions", v, "release.json"), &cur)
	} else {
		cur = Signed{Version: name(""), Created: s.Packaged}
	}
	if cur.Created.After(f.Created) {
		f = cur
	}
	return f
}

// endTrial forgets the trial on disk, durably.
func (s *Store) endTrial() error {
	if err := os.Remove(s.path("trial.json")); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return err
	}
	return identity.SyncDir(s.Dir)
}

// passed reports whether trial t's health check passed: its healthy
// outcome is on disk (a cut may have left the trial record beside it).
func (s *Store) passed(t *Trial) bool {
	o := s.LastOutcome()
	return o != nil && o.Status == Healthy && o.CommandID == t.CommandID && o.Version == t.Version
}

// rollback puts the previous release back and records why.
func (s *Store) rollback(t *Trial, why string) error {
	if err := writeJSON(s.path("outcome.json"), Outcome{CommandID: t.CommandID, Version: t.Version, Status: RolledBack, Why: why, At: time.Now().UTC()}); err != nil {
		return err
	}
	if err := s.point("current", t.Previous); err != nil {
		return err
	}
	return os.Remove(s.path("trial.json"))
}

// LastOutcome returns how the last update ended, or nil.
func (s *Store) LastOutcome() *Outcome {
	var o Outcome
	if readJSON(s.path("outcome.json"), &o) != nil {
		return nil
	}
	return &o
}

func writeJSON(path string, v any) error {
	b, err := json.Marshal(v)
	if err != nil {
		return err
	}
	return identity.WriteFile(path, b, 0o644)
}

func readJSON(path string, v any) error {
	b, err := os.ReadFile(path)
	if err != nil {
		return err
	}
	return json.Unmarshal(b, v)
}
