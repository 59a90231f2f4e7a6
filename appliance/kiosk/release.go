package kiosk

import (
	"context"
	"encoding/json"
	"errors"
	"runtime"
	"time"

	"github.com/frank-postage/frank/appliance/update"
	"github.com/frank-postage/frank/protocol"
)

// Signed releases (protocol README: Remote commands, update): the kiosk
// verifies an offered release with its release key, downloads it from the
// hub, installs it when no sale is in hand and restarts into it. The new
// version is on trial until its health check passes (connected, the
// printer ready, a heartbeat taken by the broker); the launcher
// (appliance/update) rolls it back if not. The command's answer comes from
// whichever version runs at the end. A release signed before the one
// running, or one that ran healthy here, is refused (update_failed): see
// update.Store.Floor.

// healthDefault is a release's time to pass its health check when the
// offer does not say.
const healthDefault = 2 * time.Minute

// onUpdate handles an update command. It returns nil when there is no
// answer yet: the download failed for now, or a release is on trial (this
// one, or another that must end first).
func (k *Kiosk) onUpdate(ctx context.Context, c *protocol.Command) (res *protocol.CommandResult, then func()) {
	res = &protocol.CommandResult{CommandID: c.CommandID, KioskID: k.cfg.ID, Status: protocol.ResultOK, Firmware: k.cfg.Firmware}
	refuse := func(err error) (*protocol.CommandResult, func()) {
		res.Status, res.Error = protocol.ResultRejected, protocol.AsError(err)
		if res.Error.Code == protocol.CodeInternal {
			res.Error = protocol.Errorf(protocol.CodeUpdateFailed, "%v", err)
		}
		return res, nil
	}
	st := k.cfg.Updates
	if st == nil || c.Release == nil {
		return refuse(protocol.Errorf(protocol.CodeUpdateFailed, "this kiosk takes no releases (no release key), or the command offered none"))
	}
	m, err := protocol.VerifyRelease(st.Key, c.Release.Manifest, c.Release.Signature)
	if err != nil {
		k.log.Error("release refused before download", "command_id", c.CommandID, "err", err)
		return refuse(protocol.Errorf(protocol.CodeUpdateFailed, "release refused: %v", err))
	}
	if o := st.LastOutcome(); o != nil && o.CommandID == c.CommandID && o.Status == update.RolledBack {
		return refuse(protocol.Errorf(protocol.CodeUpdateFailed, "release %s was rolled back: %s", o.Version, o.Why))
	}
	if m.Version == k.cfg.Firmware {
		if t := st.Trial(); t != nil && t.Version == m.Version && t.Version == st.Current() {
			// Running it on trial: the health check answers, or the
			// launcher rolls it back and the fallback answers. An ok
			// now, kept as this command's answer, would be the only one
			// the hub ever got, even after a rollback.
			return nil, nil
		}
		return res, nil // running it, healthy
	}
	if t := st.Trial(); t != nil && t.CommandID == c.CommandID {
		if t.Version == st.Current() {
			return nil, nil // the launcher decides
		}
		// Power cut before the release became current: the launcher
		// passes this trial over, so install again.
		k.log.Warn("release on trial never became current; installing it again", "version", t.Version, "command_id", c.CommandID)
		if err := st.DropTrial(); err != nil {
			k.log.Error("stale trial not dropped", "err", err)
			return refuse(err)
		}
	}
	if t := st.Trial(); t != nil && t.Version == st.Current() {
		// Another release is on trial (ops started a new rollout before
		// the last one's trial ended). Installing over it would make an
		// unproven release the fallback, so this update waits, unanswered:
		// the hub sends it again every 15 s and it installs once the trial
		// has ended, healthy or rolled back, within the trial's deadline.
		// A refusal would count as a failure against the new rollout.
		k.log.Warn("release not installed while another is on trial; the hub offers it again", "version", m.Version, "on_trial", t.Version, "deadline", t.Deadline)
		return nil, nil
	}
	if _, err := st.Stage(ctx, k.cfg.Downloads, k.cfg.HubURL, c.Release, runtime.GOARCH); err != nil {
		var perr *protocol.Error
		if errors.As(err, &perr) {
			k.log.Error("release refused", "version", m.Version, "err", err)
			return refuse(err)
		}
		k.log.Warn("release not downloaded yet; the hub offers it again", "version", m.Version, "err", err)
		return nil, nil
	}
	if k.cfg.Restart == nil {
		return refuse(protocol.Errorf(protocol.CodeUpdateFailed, "this kiosk cannot restart itself"))
	}
	health := healthDefault
	if c.Release.HealthS > 0 {
		health = time.Duration(c.Release.HealthS) * time.Second
	}
	k.saleMu.Lock() // no sale in hand, and none starts: held until the process ends
	if err := st.Install(c.CommandID, m.Version, health); err != nil {
		k.saleMu.Unlock()
		if errors.Is(err, update.ErrOnTrial) {
			k.log.Warn("release not installed while another is on trial; the hub offers it again", "version", m.Version, "err", err)
			return nil, nil
		}
		k.log.Error("release not installed", "version", m.Version, "err", err)
		return refuse(err)
	}
	k.log.Warn("release installed; restarting into it", "version", m.Version, "from", k.cfg.Firmware, "health_s", int(health.Seconds()))
	return nil, k.cfg.Restart
}

// checkHealth ends this version's trial once it is healthy, and tells the
// hub how the last update ended (ok, or rolled back to this version).
func (k *Kiosk) checkHealth() {
	st := k.cfg.Updates
	if st == nil {
		return
	}
	t := st.Trial()
	onTrial := t != nil && t.Version == k.cfg.Firmware && update.Launched() == k.cfg.Firmware
	for {
		if k.Ready() && k.Status().Printer == "ok" && k.publishJSON(protocol.TopicTelemetry, k.Telemetry()) {
			break
		}
		select {
		case <-k.stop:
			return
		case <-time.After(time.Second):
		}
	}
	if onTrial {
		if err := st.MarkHealthy(k.cfg.Firmware); err != nil {
			k.log.Error("health check passed but not recorded", "err", err)
			return
		}
		k.log.Info("release healthy", "version", k.cfg.Firmware)
	}
	k.tellOutcome(context.Background())
}

// tellOutcome tells the hub, once, how the last update ended: ok, if this
// version is the release and passed its health check, or rolled back to
// this version.
func (k *Kiosk) tellOutcome(ctx context.Context) {
	o := k.cfg.Updates.LastOutcome()
	if o == nil {
		return
	}
	k.cmds.mu.Lock()
	defer k.cmds.mu.Unlock()
	if k.commandDone(ctx, o.CommandID) != nil {
		return // told already
	}
	res := protocol.CommandResult{CommandID: o.CommandID, KioskID: k.cfg.ID, Status: protocol.ResultOK, Firmware: k.cfg.Firmware, At: k.now().UTC()}
	if o.Status == update.RolledBack {
		res.Status, res.Error = protocol.ResultRejected, protocol.Errorf(protocol.CodeUpdateFailed, "release %s was rolled back to %s: %s", o.Version, k.cfg.Firmware, o.Why)
	} else if o.Version != k.cfg.Firmware {
		return
	}
	b, _ := json.Marshal(res)
	k.rememberCommand(ctx, o.CommandID, b)
	k.link.Send(protocol.TopicCommandResult, b, 5*time.Second)
}
