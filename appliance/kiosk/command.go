package kiosk

import (
	"context"
	"encoding/json"
	"log/slog"
	"runtime"
	"strings"
	"sync"
	"time"

	"github.com/frank-postage/frank/protocol"
)

// Remote commands from ops (protocol README: Remote commands). Each
// command id is carried out once: its result is kept, in the journal when
// there is one, and a repeat is answered with it. A command that changes
// whether the kiosk sells, or restarts it, waits for the sale in hand to
// end; it never cuts one short.

// opsState is what ops set remotely. It survives a restart (the journal
// keeps it), so a locked kiosk comes back locked.
type opsState struct {
	OutOfService bool   `json:"out_of_service,omitempty"`
	Locked       bool   `json:"locked,omitempty"`
	Message      string `json:"message,omitempty"` // for the screen
}

const opsSetting = "ops_state"

// commandLog remembers the results of commands carried out when there is no
// journal (a kiosk in a test).
type commandLog struct {
	mu   sync.Mutex // one command at a time
	done map[string][]byte
}

// restoreOps reads what ops set before the kiosk last stopped.
func (k *Kiosk) restoreOps(ctx context.Context) {
	if k.journal == nil {
		return
	}
	b, err := k.journal.Setting(ctx, opsSetting)
	if err != nil || b == nil {
		if err != nil {
			k.log.Error("journal", "err", err)
		}
		return
	}
	var s opsState
	if err := json.Unmarshal(b, &s); err != nil {
		k.log.Error("journal: ops state unreadable; left unset", "err", err)
		return
	}
	k.ds.mu.Lock()
	k.ds.ops = s
	k.ds.mu.Unlock()
	if s.Locked || s.OutOfService {
		k.log.Warn("out of service by ops since before the restart", "locked", s.Locked, "message", s.Message)
	}
}

// setOps changes what ops set, durably first.
func (k *Kiosk) setOps(ctx context.Context, change func(*opsState)) error {
	k.ds.mu.Lock()
	s := k.ds.ops
	k.ds.mu.Unlock()
	change(&s)
	if k.journal != nil {
		b, _ := json.Marshal(s)
		if err := k.journal.SetSetting(ctx, opsSetting, b); err != nil {
			return err
		}
	}
	k.ds.mu.Lock()
	k.ds.ops = s
	k.ds.mu.Unlock()
	k.statusChanged()
	return nil
}

// locked reports whether ops locked the kiosk.
func (k *Kiosk) locked() bool {
	k.ds.mu.Lock()
	defer k.ds.mu.Unlock()
	return k.ds.ops.Locked
}

// onCommand carries out a command from the hub and answers it.
func (k *Kiosk) onCommand(payload []byte) {
	c, err := protocol.DecodeCommand(payload)
	if err != nil || c.KioskID != k.cfg.ID {
		k.log.Error("bad command from hub", "err", err)
		return
	}
	k.cmds.mu.Lock()
	defer k.cmds.mu.Unlock()
	ctx := context.Background()
	if prev := k.commandDone(ctx, c.CommandID); prev != nil {
		k.link.Send(protocol.TopicCommandResult, prev, 5*time.Second)
		return
	}
	k.log.Info("command from ops", "command_id", c.CommandID, "action", c.Action, "by", c.IssuedBy, "message", c.Message)
	res := protocol.CommandResult{CommandID: c.CommandID, KioskID: k.cfg.ID, Status: protocol.ResultOK}
	var then func()
	switch c.Action {
	case protocol.ActionOutOfService, protocol.ActionInService, protocol.ActionLock, protocol.ActionUnlock:
		k.saleMu.Lock()
		err = k.setOps(ctx, func(s *opsState) {
			switch c.Action {
			case protocol.ActionOutOfService:
				s.OutOfService = true
			case protocol.ActionInService:
				s.OutOfService = false
			case protocol.ActionLock:
				s.Locked = true
			case protocol.ActionUnlock:
				s.Locked = false
			}
			if c.Action == protocol.ActionOutOfService || c.Action == protocol.ActionLock {
				s.Message = c.Message
			} else if !s.OutOfService && !s.Locked {
				s.Message = ""
			}
		})
		if c.Action == protocol.ActionLock {
			k.staff.logoutAll()
		}
		k.saleMu.Unlock()
	case protocol.ActionRestart:
		if k.cfg.Restart == nil {
			err = protocol.Errorf(protocol.CodeServiceUnavailable, "this kiosk cannot restart itself")
			break
		}
		// Held until the process ends: no sale starts in between.
		k.saleMu.Lock()
		then = k.cfg.Restart
	case protocol.ActionDiagnostics:
		d := k.Diagnostics(ctx)
		res.Diagnostics = &d
	case protocol.ActionUpdate:
		r, restart := k.onUpdate(ctx, c)
		if r == nil {
			if restart != nil {
				restart()
			}
			return // answered later, by the health check
		}
		res, then = *r, restart
	case protocol.ActionResyncStock:
		k.saleMu.Lock()
		k.resyncStock(ctx)
		k.saleMu.Unlock()
		n := k.LabelsLeft()
		res.LabelsLeft = &n
	default:
		err = protocol.Errorf(protocol.CodeInvalidRequest, "action %q is not known to firmware %s", c.Action, k.cfg.Firmware)
	}
	if err != nil {
		res.Status, res.Error = protocol.ResultRejected, protocol.AsError(err)
		k.log.Warn("command refused", "command_id", c.CommandID, "action", c.Action, "err", err)
	}
	res.At = k.now().UTC()
	b, _ := json.Marshal(res)
	k.rememberCommand(ctx, c.CommandID, b)
	k.link.Send(protocol.TopicCommandResult, b, 5*time.Second)
	if then != nil {
		k.log.Warn("restarting on ops' command", "command_id", c.CommandID, "by", c.IssuedBy)
		then()
	}
}

func (k *Kiosk) commandDone(ctx context.Context, id string) []byte {
	if k.journal == nil {
		return k.cmds.done[id]
	}
	b, err := k.journal.CommandResult(ctx, id)
	if err != nil {
		k.log.Error("journal", "err", err)
	}
	return b
}

// rememberCommand keeps a command's result before it is sent: a restart
// must not be carried out twice.
func (k *Kiosk) rememberCommand(ctx context.Context, id string, result []byte) {
	if k.journal == nil {
		if k.cmds.done == nil {
			k.cmds.done = map[string][]byte{}
		}
		k.cmds.done[id] = result
		return
	}
	if err := k.journal.CommandDone(ctx, id, result); err != nil {
		k.log.Error("journal", "err", err)
	}
}

// Diagnostics is the kiosk's report of itself for ops.
func (k *Kiosk) Diagnostics(ctx context.Context) protocol.Diagnostics {
	st := k.Status()
	d := protocol.Diagnostics{Firmware: k.cfg.Firmware, GoVersion: runtime.Version(), OS: runtime.GOOS, Arch: runtime.GOARCH,
		UptimeS: int64(time.Since(k.started).Seconds()), Ready: st.Ready, Reasons: st.Reasons,
		Printer: st.Printer, Paper: st.Paper, Scale: st.Scale, Scanner: "none", Panel: "none", LabelsLeft: st.LabelsLeft,
		Sheets: k.stock.count(), Log: []string{}}
	if k.dev.Scans != nil {
		d.Scanner = "attached"
	}
	if k.dev.Panel != nil {
		d.Panel = "door_closed"
		if k.dev.Panel.DoorOpen() {
			d.Panel = "door_open"
		}
	}
	if k.journal != nil {
		if open, err := k.journal.Unfinished(ctx); err == nil {
			d.OpenSales = len(open)
		}
	}
	if k.cfg.Logs != nil {
		d.Log = k.cfg.Logs.Lines()
	}
	// One message carries it: the oldest lines give way.
	for len(d.Log) > 0 {
		b, _ := json.Marshal(d)
		if len(b) < protocol.MaxMessageBytes-4<<10 {
			break
		}
		d.Log = d.Log[len(d.Log)/4+1:]
	}
	return d
}

// LogRing keeps the kiosk's most recent log lines for diagnostics.
type LogRing struct {
	mu    sync.Mutex
	lines []string
	next  int
	full  bool
}

// NewLogRing keeps the last n lines.
func NewLogRing(n int) *LogRing { return &LogRing{lines: make([]string, n)} }

// Handler returns a handler that writes records to the ring as text; join
// it to the kiosk's own with slog.NewMultiHandler.
func (r *LogRing) Handler() slog.Handler { return slog.NewTextHandler(r, nil) }

// Write takes one record as the text handler writes it: one line, cut to
// 500 bytes.
func (r *LogRing) Write(p []byte) (int, error) {
	line := strings.TrimRight(string(p), "\n")
	if len(line) > 500 {
		line = line[:500] + "…"
	}
	r.mu.Lock()
	r.lines[r.next] = line
	r.next = (r.next + 1) % len(r.lines)
	r.full = r.full || r.next == 0
	r.mu.Unlock()
	return len(p), nil
}

// Lines returns the kept lines, oldest first.
func (r *LogRing) Lines() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	if !r.full {
		return append([]string{}, r.lines[:r.next]...)
	}
	return append(append([]string{}, r.lines[r.next:]...), r.lines[:r.next]...)
}

// lineSource is where diagnostics find the recent log; a LogRing.
type lineSource interface {
	Lines() []string
}

var _ lineSource = (*LogRing)(nil)

// opsReasons says why no sale may start while ops hold the kiosk.
func opsReasons(s opsState) []string {
	var why []string
	if s.Locked {
		why = append(why, "locked")
	}
	if s.OutOfService {
		why = append(why, "ops_out_of_service")
	}
	return why
}
