package hub

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/frank-postage/frank/hub/alerts"
	"github.com/frank-postage/frank/hub/claims"
	"github.com/frank-postage/frank/hub/fleet"
	"github.com/frank-postage/frank/hub/settings"
	websession "github.com/frank-postage/frank/hub/web/session"
	"github.com/frank-postage/frank/protocol"
)

// Wrong staff logins a kiosk may make, counted in the database for every
// hub: StaffTries in StaffWindow, and StaffDayTries in a day, after which
// none is checked until the window ends and ops are alerted. A PIN has
// 4 to 8 digits, so these, not the PIN, are what keeps a thief with a
// kiosk from finding one; the kiosk's own lockout comes first.
const (
	StaffTries    = 5
	StaffWindow   = 15 * time.Minute
	StaffDayTries = 20
	// StaffChecks bounds every check of a kiosk's logins, right or wrong,
	// in StaffWindow: a PIN costs a bcrypt comparison per member (up to
	// 200), so one a thief knows must not buy a core's worth of them.
	StaffChecks = 10
	staffDay    = 24 * time.Hour
	// staffDayPrefix names the day's counts, which the sweep of the
	// login limits' counts keeps for their day.
	staffDayPrefix = "staff-day:"
)

// staffDesk checks the staff logins of kiosks whose store's staff the hub
// manages (protocol.TopicStaff). PIN and badge hashes stay at the hub: a
// kiosk holds nothing to guess them from offline, and every guess is one
// the hub counts.
type staffDesk struct {
	claims   *claims.Claims
	fleet    *fleet.Registry
	settings *settings.Settings
	alerts   *alerts.Store
	window   *websession.Limiter // StaffTries per StaffWindow
	day      *websession.Limiter // StaffDayTries per day
	checks   *websession.Limiter // StaffChecks per StaffWindow, its "failures" every check
	log      *slog.Logger
	now      func() time.Time

	mu      sync.Mutex
	alerted map[string]time.Time // kiosks alerted staff_guessing, when: once an hour here
}

func newStaffDesk(h *Hub) *staffDesk {
	d := &staffDesk{claims: h.claims, fleet: h.fleet, settings: h.settings, alerts: h.alerts, log: h.log.With("component", "staff"),
		window: websession.NewLimiter(StaffTries, StaffWindow), day: websession.NewLimiter(StaffDayTries, staffDay),
		checks: websession.NewLimiter(StaffChecks, StaffWindow), alerted: map[string]time.Time{}, now: h.clockNow}
	for _, l := range []*websession.Limiter{d.window, d.day, d.checks} {
		l.DB, l.Now = h.db, h.clockNow
	}
	return d
}

// Answer serves one StaffLogin from kioskID's topic; the PIN and badge
// are never logged.
func (d *staffDesk) Answer(ctx context.Context, kioskID string, payload []byte) ([]byte, *protocol.Error) {
	res := protocol.StaffLoginResult{Status: protocol.ResultRejected}
	r, err := protocol.DecodeStaffLogin(payload)
	if r != nil {
		res.RequestID = r.RequestID
	}
	if err == nil && r.KioskID != kioskID {
		err = protocol.Errorf(protocol.CodeKioskMismatch, "kiosk_id %s in a staff login on kiosk %s's topic", r.KioskID, kioskID)
	}
	if err == nil {
		res.Name, res.RetryAfterS, err = d.login(ctx, r)
	}
	if err != nil {
		res.Error = protocol.AsError(err)
	} else {
		res.Status = protocol.ResultOK
	}
	b, merr := json.Marshal(res)
	if merr != nil {
		return nil, protocol.Errorf(protocol.CodeInternal, "staff login: %v", merr)
	}
	return b, res.Error
}

// login checks r's PIN or badge against the kiosk's store's staff, within
// the kiosk's limits; retry is set when a limit refused it unchecked.
func (d *staffDesk) login(ctx context.Context, r *protocol.StaffLogin) (name string, retry int, err error) {
	k, err := d.fleet.InService(ctx, r.KioskID)
	if err != nil {
		return "", 0, err
	}
	// One check of a kiosk's logins at a time in the cluster: the counts
	// the limits read are then every earlier check's, whichever hub made
	// it. (Each hub's limiter counts only its own tries under way, so two
	// hubs would each let the whole limit through at once.) A kiosk asks
	// once at a time; a second try meanwhile is refused unchecked.
	release, ok, err := d.claims.TryTake(ctx, "staff-login", r.KioskID)
	if err != nil {
		return "", 0, fmt.Errorf("staff login: %w", err)
	}
	if !ok {
		return "", 1, protocol.Errorf(protocol.CodeUnauthorized, "another staff login of this kiosk is being checked; try again in a moment")
	}
	defer release()
	// Each limiter has a row of its own in the shared counts.
	key, dayKey, checksKey := "staff:kiosk:"+r.KioskID, staffDayPrefix+"kiosk:"+r.KioskID, "staff-checks:kiosk:"+r.KioskID
	if ok, wait := d.day.Allow(dayKey); !ok {
		d.alert(ctx, r.KioskID, wait)
		return "", retryAfter(wait), d.limited(wait)
	}
	defer d.day.Done(dayKey)
	if ok, wait := d.window.Allow(key); !ok {
		return "", retryAfter(wait), d.limited(wait)
	}
	defer d.window.Done(key)
	if ok, wait := d.checks.Allow(checksKey); !ok {
		return "", retryAfter(wait), protocol.Errorf(protocol.CodeUnauthorized,
			"too many staff logins at this kiosk; try again in %s", wait.Round(time.Second))
	}
	defer d.checks.Done(checksKey)
	d.checks.Fail(checksKey) // counts every check
	by := "pin"
	if r.Badge != "" {
		by = "badge"
	}
	name, err = d.settings.CheckStaff(ctx, k.Store, r.PIN, r.Badge)
	if err != nil {
		return "", 0, fmt.Errorf("staff login: %w", err)
	}
	if name == "" {
		d.window.Fail(key)
		d.day.Fail(dayKey)
		d.log.Warn("staff login refused", "kiosk", r.KioskID, "by", by)
		return "", 0, protocol.Errorf(protocol.CodeUnauthorized, "wrong PIN or badge")
	}
	d.log.Info("staff logged in", "kiosk", r.KioskID, "store", k.Store, "name", name, "by", by)
	return name, 0, nil
}

// alert raises staff_guessing for a kiosk at its day's limit, once an
// hour from this hub: every refused login after it would otherwise write
// the alert again.
func (d *staffDesk) alert(ctx context.Context, kioskID string, wait time.Duration) {
	now := d.now()
	d.mu.Lock()
	if now.Sub(d.alerted[kioskID]) < time.Hour {
		d.mu.Unlock()
		return
	}
	if len(d.alerted) > 1000 {
		for k, at := range d.alerted {
			if now.Sub(at) >= time.Hour {
				delete(d.alerted, k)
			}
		}
	}
	d.alerted[kioskID] = now
	d.mu.Unlock()
	d.alerts.Raise(ctx, alerts.StaffGuessing, "kiosk/"+kioskID, fmt.Sprintf(
		"kiosk %s made %d wrong staff logins in a day; the hub checks none of its logins for %s. Lock it (hub kiosk lock) if it may be stolen",
		kioskID, StaffDayTries, wait.Round(time.Minute)))
}

// limited is the refusal of a login no limit lets be checked; the front
// logs it within the kiosk's log budget.
func (d *staffDesk) limited(wait time.Duration) error {
	return protocol.Errorf(protocol.CodeUnauthorized, "too many wrong staff logins at this kiosk; try again in %s", wait.Round(time.Second))
}

// retryAfter is wait in whole seconds, at least one.
func retryAfter(wait time.Duration) int {
	return max(1, int((wait+time.Second-1)/time.Second))
}
