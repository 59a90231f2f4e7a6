// Package releases keeps the kiosk firmware releases ops publish and rolls
// them out in stages. A release is signed with the vendor's release key,
// which the hub never holds: the hub checks a release against the release
// public key when it is published, and each kiosk checks it again before
// it installs anything. A rollout offers the release to a canary set of
// kiosks, stores or a share of the fleet, then to each next stage on
// command or after a soak, and halts by itself when more than a set share
// of the kiosks it updated failed their health check.
package releases

import (
	"context"
	"crypto/ed25519"
	"crypto/sha256"
	"database/sql"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"hash/fnv"
	"slices"
	"strings"
	"time"

	"github.com/frank-postage/frank/hub/alerts"
	"github.com/frank-postage/frank/hub/commands"
	"github.com/frank-postage/frank/hub/fleet"
	"github.com/frank-postage/frank/hub/store"
	"github.com/frank-postage/frank/protocol"
)

// Path is where kiosks download a release's binaries: Path/VERSION/ARCH.
const Path = "/api/v1/releases"

// Rollout states.
const (
	Running = "running"
	Halted  = "halted" // by itself, at its failure threshold
	Done    = "done"
	Aborted = "aborted" // by ops
)

// Stage picks the kiosks a stage adds: named kiosks, the kiosks of named
// stores, or a share of the whole fleet.
type Stage struct {
	Kiosks  []string `json:"kiosks,omitempty"`
	Stores  []string `json:"stores,omitempty"`
	Percent int      `json:"percent,omitempty"`
}

// ParseStage reads a stage as ops type it: kiosks=K1,K2, stores=S1 or
// percent=10.
func ParseStage(s string) (Stage, error) {
	k, v, _ := strings.Cut(s, "=")
	list := strings.Split(v, ",")
	var st Stage
	switch k {
	case "kiosks":
		st.Kiosks = list
	case "stores":
		st.Stores = list
	case "percent":
		var n int
		if _, err := fmt.Sscan(v, &n); err != nil || n < 1 || n > 100 {
			return st, protocol.Errorf(protocol.CodeInvalidRequest, "stage %q: want percent=1..100", s)
		}
		st.Percent = n
	default:
		return st, protocol.Errorf(protocol.CodeInvalidRequest, "stage %q: want kiosks=K1,K2, stores=S1 or percent=N", s)
	}
	return st, nil
}

// Releases keeps releases and rollouts.
type Releases struct {
	db       *store.DB
	commands *commands.Commands
	kiosks   *fleet.Registry
	alerts   *alerts.Store
	now      func() time.Time
	linked   func() // tests: runs in an offer's transaction, once it is linked
}

// New returns the release book.
func New(db *store.DB, cmds *commands.Commands, kiosks *fleet.Registry, al *alerts.Store, now func() time.Time) *Releases {
	if now == nil {
		now = time.Now
	}
	return &Releases{db: db, commands: cmds, kiosks: kiosks, alerts: al, now: now}
}

// Publish stores a release: its manifest must verify with the release
// public key, and each binary must have the size and SHA-256 it signs.
func (r *Releases) Publish(ctx context.Context, key ed25519.PublicKey, manifest, sig []byte, bins map[string][]byte, by string) (*protocol.ReleaseManifest, error) {
	m, err := protocol.VerifyRelease(key, manifest, sig)
	if err != nil {
		return nil, fmt.Errorf("releases: publish: %w", err)
	}
	for _, a := range m.Artifacts {
		b := bins[a.Arch]
		sum := sha256.Sum256(b)
		if int64(len(b)) != a.Size || hex.EncodeToString(sum[:]) != a.SHA256 {
			return nil, fmt.Errorf("releases: publish %s: the %s binary is not the one the manifest signs", m.Version, a.Arch)
		}
	}
	err = r.db.InTx(ctx, func(tx *sql.Tx) error {
		if _, err := tx.ExecContext(ctx, r.db.Rebind(`INSERT INTO releases (version, manifest, signature, published_by, published_at) VALUES (?, ?, ?, ?, ?)`),
			m.Version, manifest, sig, by, r.now().UnixMicro()); err != nil {
			return err
		}
		for _, a := range m.Artifacts {
			if _, err := tx.ExecContext(ctx, r.db.Rebind(`INSERT INTO release_files (version, arch, body) VALUES (?, ?, ?)`), m.Version, a.Arch, bins[a.Arch]); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("releases: publish %s: %w", m.Version, err)
	}
	return m, nil
}

// Binary returns a release's binary for arch.
func (r *Releases) Binary(ctx context.Context, version, arch string) ([]byte, time.Time, error) {
	var b []byte
	var at int64
	err := r.db.QueryRowContext(ctx, r.db.Rebind(`SELECT f.body, r.published_at FROM release_files f JOIN releases r ON r.version = f.version
		WHERE f.version = ? AND f.arch = ?`), version, arch).Scan(&b, &at)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, time.Time{}, ErrUnknown
	}
	if err != nil {
		return nil, time.Time{}, fmt.Errorf("releases: binary %s/%s: %w", version, arch, err)
	}
	return b, time.UnixMicro(at), nil
}

// ErrUnknown is a release or rollout nobody published or started.
var ErrUnknown = errors.New("releases: no such release or rollout")

// Rollout is a rollout and its progress.
type Rollout struct {
	ID            int64     `json:"id"`
	Version       string    `json:"version"`
	Stages        []Stage   `json:"stages"`
	Stage         int       `json:"stage"` // index of the stage offered up to
	MaxFailurePct int       `json:"max_failure_pct"`
	SoakS         int       `json:"soak_s"`
	HealthS       int       `json:"health_s"`
	State         string    `json:"state"`
	Why           string    `json:"why,omitempty"`
	CreatedBy     string    `json:"created_by"`
	Created       time.Time `json:"created_at"`
	StageAt       time.Time `json:"stage_at"`
	// Progress: kiosks offered the release, healthy on it, failed
	// (rolled back, refused or expired), and not answered yet.
	Offered int `json:"offered"`
	Healthy int `json:"healthy"`
	Failed  int `json:"failed"`
	Pending int `json:"pending"`
}

// Start begins a rollout of a published release. The stages end with the
// whole fleet, added if the last does not reach it.
func (r *Releases) Start(ctx context.Context, version string, stages []Stage, maxFailurePct int, soak, health time.Duration, by string) (*Rollout, error) {
	if maxFailurePct < 0 || maxFailurePct > 100 || health < 10*time.Second || soak < 0 {
		return nil, protocol.Errorf(protocol.CodeInvalidRequest, "want a failure threshold of 0-100%%, a health limit of at least 10 s, and a soak of 0 (widen by hand) or more")
	}
	if len(stages) == 0 || stages[len(stages)-1].Percent != 100 {
		stages = append(stages, Stage{Percent: 100})
	}
	var n int
	if err := r.db.QueryRowContext(ctx, r.db.Rebind(`SELECT COUNT(*) FROM releases WHERE version = ?`), version).Scan(&n); err != nil {
		return nil, fmt.Errorf("releases: start: %w", err)
	}
	if n == 0 {
		return nil, protocol.Errorf(protocol.CodeInvalidRequest, "release %s was never published", version)
	}
	b, _ := json.Marshal(stages)
	now := r.now().UnixMicro()
	var id int64
	if err := r.db.QueryRowContext(ctx, r.db.Rebind(`INSERT INTO rollouts (version, stages, max_failure_pct, soak_s, health_s, state, created_by, created_at, stage_at)
		VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) RETURNING id`), version, string(b), maxFailurePct, int(soak.Seconds()), int(health.Seconds()), Running, by, now, now).Scan(&id); err != nil {
		return nil, fmt.Errorf("releases: start: %w", err)
	}
	return r.Get(ctx, id)
}

// Widen offers the release to the rollout's next stage. The last stage,
// the whole fleet, has none.
func (r *Releases) Widen(ctx context.Context, id int64) error {
	ro, err := r.Get(ctx, id)
	if err != nil {
		return fmt.Errorf("releases: widen %d: %w", id, err)
	}
	if ro.State != Running {
		return protocol.Errorf(protocol.CodeInvalidRequest, "rollout %d is not running", id)
	}
	if ro.Stage+1 >= len(ro.Stages) {
		return protocol.Errorf(protocol.CodeInvalidRequest, "rollout %d already offers its release to the whole fleet", id)
	}
	// From the stage read: two widenings at once move it one stage.
	moved, err := r.widenFrom(ctx, id, ro.Stage)
	if err != nil {
		return fmt.Errorf("releases: widen %d: %w", id, err)
	}
	if !moved {
		return protocol.Errorf(protocol.CodeInvalidRequest, "rollout %d changed meanwhile; look again", id)
	}
	return nil
}

// widenFrom moves a running rollout from stage from to the next, and says
// whether it did: not if it was stopped or widened meanwhile.
func (r *Releases) widenFrom(ctx context.Context, id int64, from int) (bool, error) {
	res, err := r.db.ExecContext(ctx, r.db.Rebind(`UPDATE rollouts SET stage = stage + 1, stage_at = ? WHERE id = ? AND state = ? AND stage = ?`),
		r.now().UnixMicro(), id, Running, from)
	if err != nil {
		return false, err
	}
	n, err := res.RowsAffected()
	return n == 1, err
}

// Abort stops a rollout: kiosks not yet updated are no longer offered it.
func (r *Releases) Abort(ctx context.Context, id int64, by string) error {
	return r.stop(ctx, id, Aborted, "aborted by "+by)
}

func (r *Releases) stop(ctx context.Context, id int64, state, why string) error {
	err := r.db.InTx(ctx, func(tx *sql.Tx) error {
		res, err := tx.ExecContext(ctx, r.db.Rebind(`UPDATE rollouts SET state = ?, why = ? WHERE id = ? AND state = ?`), state, why, id, Running)
		if err != nil {
			return err
		}
		if n, _ := res.RowsAffected(); n != 1 {
			return protocol.Errorf(protocol.CodeInvalidRequest, "rollout %d is not running", id)
		}
		w := commands.ExpireRollout(id)
		_, err = tx.ExecContext(ctx, r.db.Rebind(w.Query), w.Args...)
		return err
	})
	if err != nil {
		return fmt.Errorf("releases: stop %d: %w", id, err)
	}
	return nil
}

// selectRollout counts only the kiosks still in service: a kiosk retired
// after it was offered the release (lost, stolen) never answers, and its
// offer, expired, is no failure of the release.
const selectRollout = `SELECT r.id, r.version, r.stages, r.stage, r.max_failure_pct, r.soak_s, r.health_s, r.state, r.why, r.created_by, r.created_at, r.stage_at,
	(SELECT COUNT(*) FROM rollout_kiosks k JOIN kiosks f ON f.kiosk_id = k.kiosk_id
		WHERE k.rollout_id = r.id AND f.retired_at IS NULL),
	(SELECT COUNT(*) FROM rollout_kiosks k JOIN kiosks f ON f.kiosk_id = k.kiosk_id JOIN kiosk_commands c ON c.id = k.command_id
		WHERE k.rollout_id = r.id AND f.retired_at IS NULL AND c.status = 'ok'),
	(SELECT COUNT(*) FROM rollout_kiosks k JOIN kiosks f ON f.kiosk_id = k.kiosk_id JOIN kiosk_commands c ON c.id = k.command_id
		WHERE k.rollout_id = r.id AND f.retired_at IS NULL AND c.status IN ('rejected', 'expired'))
	FROM rollouts r`

// Get returns one rollout with its progress.
func (r *Releases) Get(ctx context.Context, id int64) (*Rollout, error) {
	list, err := r.query(ctx, selectRollout+` WHERE r.id = ?`, id)
	if err != nil {
		return nil, err
	}
	if len(list) == 0 {
		return nil, ErrUnknown
	}
	return &list[0], nil
}

// List returns the rollouts, newest first.
func (r *Releases) List(ctx context.Context) ([]Rollout, error) {
	return r.query(ctx, selectRollout+` ORDER BY r.id DESC LIMIT 50`)
}

func (r *Releases) query(ctx context.Context, q string, args ...any) ([]Rollout, error) {
	rows, err := r.db.QueryContext(ctx, r.db.Rebind(q), args...)
	if err != nil {
		return nil, fmt.Errorf("releases: rollouts: %w", err)
	}
	defer rows.Close()
	var out []Rollout
	for rows.Next() {
		var ro Rollout
		var stages string
		var created, stageAt int64
		if err := rows.Scan(&ro.ID, &ro.Version, &stages, &ro.Stage, &ro.MaxFailurePct, &ro.SoakS, &ro.HealthS, &ro.State, &ro.Why, &ro.CreatedBy,
			&created, &stageAt, &ro.Offered, &ro.Healthy, &ro.Failed); err != nil {
			return nil, fmt.Errorf("releases: rollouts: %w", err)
		}
		if err := json.Unmarshal([]byte(stages), &ro.Stages); err != nil {
			return nil, fmt.Errorf("releases: rollout %d: %w", ro.ID, err)
		}
		ro.Created, ro.StageAt = time.UnixMicro(created).UTC(), time.UnixMicro(stageAt).UTC()
		ro.Pending = ro.Offered - ro.Healthy - ro.Failed
		out = append(out, ro)
	}
	return out, rows.Err()
}

// Step moves every running rollout on: it offers the release to the
// kiosks of the stages reached and not yet offered it, halts a rollout
// whose failures passed its threshold, widens one whose stage is all
// healthy and soaked, and ends one that reached the whole fleet. One hub
// does it (the leader).
func (r *Releases) Step(ctx context.Context) error {
	list, err := r.List(ctx)
	if err != nil {
		return err
	}
	for _, ro := range list {
		if ro.State != Running {
			continue
		}
		if err := r.step(ctx, &ro); err != nil {
			return fmt.Errorf("releases: rollout %d: %w", ro.ID, err)
		}
	}
	return nil
}

func (r *Releases) step(ctx context.Context, ro *Rollout) error {
	// Judge first: a halted rollout offers nobody more.
	if ro.Failed > 0 && ro.Failed*100 > ro.MaxFailurePct*ro.Offered {
		why := fmt.Sprintf("%d of %d kiosks offered %s failed (%d%%, threshold %d%%)", ro.Failed, ro.Offered, ro.Version, ro.Failed*100/ro.Offered, ro.MaxFailurePct)
		if err := r.stop(ctx, ro.ID, Halted, why); err != nil {
			return err
		}
		r.alerts.Raise(ctx, alerts.RolloutHalted, fmt.Sprintf("rollout/%d", ro.ID), "rollout of "+ro.Version+" halted: "+why)
		return nil
	}
	targets, err := r.targets(ctx, ro)
	if err != nil {
		return err
	}
	offered, err := r.offered(ctx, ro.ID)
	if err != nil {
		return err
	}
	var offer *protocol.ReleaseOffer
	for _, k := range targets {
		if offered[k] {
			continue
		}
		if offer == nil {
			if offer, err = r.offer(ctx, ro); err != nil {
				return err
			}
		}
		// The offer and its link commit together: an offer the rollout
		// does not know would survive its abort. Another hub that leads
		// too may have linked the kiosk meanwhile; then this offer goes.
		_, err := r.commands.IssueUpdate(ctx, k, offer, ro.CreatedBy, func(tx *sql.Tx, commandID string) error {
			// ro was read before: an abort or a widening committed since
			// would miss this offer (stop expires only linked ones). The
			// lock makes a later stop wait for the link, and expire it.
			var state string
			var stage int
			if err := tx.QueryRowContext(ctx, r.db.Rebind(`SELECT state, stage FROM rollouts WHERE id = ?`+r.db.ForUpdate()), ro.ID).Scan(&state, &stage); err != nil {
				return fmt.Errorf("releases: recheck rollout %d: %w", ro.ID, err)
			}
			if state != Running || stage != ro.Stage {
				return errMoved
			}
			res, err := tx.ExecContext(ctx, r.db.Rebind(`INSERT INTO rollout_kiosks (rollout_id, kiosk_id, stage, command_id) VALUES (?, ?, ?, ?)
				ON CONFLICT (rollout_id, kiosk_id) DO NOTHING`), ro.ID, k, ro.Stage, commandID)
			if err != nil {
				return err
			}
			if n, _ := res.RowsAffected(); n == 0 {
				return errOffered
			}
			if r.linked != nil {
				r.linked()
			}
			return nil
		})
		if errors.Is(err, errMoved) {
			return nil // the next Step reads the rollout as it is now
		}
		if errors.Is(err, errOffered) {
			ro.Offered++ // by the other hub, and pending still
			ro.Pending++
			continue
		}
		if err != nil {
			return err
		}
		ro.Offered++
		ro.Pending++
	}
	if ro.Pending > 0 {
		return nil
	}
	last := ro.Stage == len(ro.Stages)-1
	switch {
	case last:
		_, err = r.db.ExecContext(ctx, r.db.Rebind(`UPDATE rollouts SET state = ?, why = ? WHERE id = ? AND state = ?`),
			Done, fmt.Sprintf("%d kiosks healthy on %s", ro.Healthy, ro.Version), ro.ID, Running)
	case ro.SoakS > 0 && r.now().Sub(ro.StageAt) >= time.Duration(ro.SoakS)*time.Second:
		// Only from the stage judged: if ops widened it, or another step
		// did, since ro was read, the stage it is at now has not soaked.
		_, err = r.widenFrom(ctx, ro.ID, ro.Stage)
	}
	return err
}

// errOffered is a kiosk the rollout already offered its release to.
var errOffered = errors.New("releases: offered already")

// errMoved is a rollout stopped or widened since Step read it.
var errMoved = errors.New("releases: rollout stopped or widened meanwhile")

// offer is what kiosks are sent.
func (r *Releases) offer(ctx context.Context, ro *Rollout) (*protocol.ReleaseOffer, error) {
	o := &protocol.ReleaseOffer{Path: Path + "/" + ro.Version, HealthS: ro.HealthS}
	err := r.db.QueryRowContext(ctx, r.db.Rebind(`SELECT manifest, signature FROM releases WHERE version = ?`), ro.Version).Scan(&o.Manifest, &o.Signature)
	return o, err
}

func (r *Releases) offered(ctx context.Context, id int64) (map[string]bool, error) {
	rows, err := r.db.QueryContext(ctx, r.db.Rebind(`SELECT kiosk_id FROM rollout_kiosks WHERE rollout_id = ?`), id)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	out := map[string]bool{}
	for rows.Next() {
		var k string
		if err := rows.Scan(&k); err != nil {
			return nil, err
		}
		out[k] = true
	}
	return out, rows.Err()
}

// targets are the kiosks in service that the stages reached so far pick.
// A share of the fleet is taken in an order fixed per rollout, so each
// stage's share contains the last one's.
func (r *Releases) targets(ctx context.Context, ro *Rollout) ([]string, error) {
	ks, err := r.kiosks.List(ctx)
	if err != nil {
		return nil, err
	}
	ks = slices.DeleteFunc(ks, func(k fleet.Kiosk) bool { return k.Retired != nil })
	rank := func(id string) uint64 {
		h := fnv.New64a()
		fmt.Fprintf(h, "%d/%s", ro.ID, id)
		return h.Sum64()
	}
	slices.SortFunc(ks, func(a, b fleet.Kiosk) int {
		ra, rb := rank(a.ID), rank(b.ID)
		switch {
		case ra < rb:
			return -1
		case ra > rb:
			return 1
		}
		return strings.Compare(a.ID, b.ID)
	})
	picked := map[string]bool{}
	for _, st := range ro.Stages[:min(ro.Stage+1, len(ro.Stages))] {
		n := (len(ks)*st.Percent + 99) / 100
		for i, k := range ks {
			if i < n || slices.Contains(st.Kiosks, k.ID) || slices.Contains(st.Stores, k.Store) {
				picked[k.ID] = true
			}
		}
	}
	var out []string
	for _, k := range ks {
		if picked[k.ID] {
			out = append(out, k.ID)
		}
	}
	return out, nil
}
