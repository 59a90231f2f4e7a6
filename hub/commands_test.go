package hub_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"testing"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"

	"github.com/frank-postage/frank/hub/commands"
	"github.com/frank-postage/frank/protocol"
	"github.com/frank-postage/frank/testbench/wait"
)

// commandsOf subscribes a stand-in kiosk to its command topic.
func (k *kioskClient) commandsOf(t *testing.T) <-chan protocol.Command {
	t.Helper()
	ch := make(chan protocol.Command, 16)
	tok := k.c.Subscribe(protocol.KioskTopic(k.id, protocol.TopicCommand), 1, func(_ mqtt.Client, m mqtt.Message) {
		c, err := protocol.DecodeCommand(m.Payload())
		if err != nil {
			t.Errorf("command %s: %v", m.Payload(), err)
			return
		}
		ch <- *c
	})
	if !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
		t.Fatalf("subscribe: %v", tok.Error())
	}
	return ch
}

func nextCommand(t *testing.T, ch <-chan protocol.Command) protocol.Command {
	t.Helper()
	select {
	case c := <-ch:
		return c
	case <-time.After(15 * time.Second):
		t.Fatal("no command reached the kiosk")
		return protocol.Command{}
	}
}

// waitCommand waits until a command has the status want.
func (e *env) waitCommand(id, want string) *commands.Command {
	e.t.Helper()
	var c *commands.Command
	wait.Until(e.t, 15*time.Second, fmt.Sprintf("command %s to be %s", id, want), func() error {
		var err error
		if c, err = e.h.Commands().Get(context.Background(), id); err == nil && c.Status != want {
			err = fmt.Errorf("it is %s", c.Status)
		}
		return err
	})
	return c
}

func TestRemoteCommandsOverMQTT(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	ctx := context.Background()
	k := e.kiosk("kiosk-1")
	cmds := k.commandsOf(t)

	// Diagnostics: the command reaches the kiosk with who gave it, and
	// the answer is kept.
	c, err := e.h.Commands().Issue(ctx, "kiosk-1", protocol.ActionDiagnostics, "", "ann")
	if err != nil {
		t.Fatal(err)
	}
	got := nextCommand(t, cmds)
	if got.CommandID != c.CommandID || got.Action != protocol.ActionDiagnostics || got.IssuedBy != "ann" {
		t.Fatalf("command %+v", got)
	}
	res, _ := json.Marshal(protocol.CommandResult{CommandID: got.CommandID, KioskID: "kiosk-1", Status: protocol.ResultOK,
		At: time.Now().UTC(), Diagnostics: &protocol.Diagnostics{Firmware: "9.9.9", Log: []string{"a line"}}})
	k.c.Publish(protocol.KioskTopic("kiosk-1", protocol.TopicCommandResult), 1, false, res)
	done := e.waitCommand(c.CommandID, commands.Done)
	if done.Result.Diagnostics == nil || done.Result.Diagnostics.Firmware != "9.9.9" || done.DoneAt == nil {
		t.Fatalf("kept %+v", done)
	}
	if d, err := e.h.Commands().LastDiagnostics(ctx, "kiosk-1"); err != nil || d == nil || d.CommandID != c.CommandID {
		t.Fatalf("last diagnostics: %+v %v", d, err)
	}
	// A kiosk cannot answer another kiosk's command.
	if err := e.h.Commands().Record(ctx, "kiosk-2", &protocol.CommandResult{CommandID: c.CommandID, KioskID: "kiosk-1", Status: protocol.ResultOK}); protocol.AsError(err).Code != protocol.CodeKioskMismatch {
		t.Fatalf("another kiosk's answer: %v", err)
	}
	if err := e.h.Commands().Record(ctx, "kiosk-2", &protocol.CommandResult{CommandID: c.CommandID, KioskID: "kiosk-2", Status: protocol.ResultOK}); !errors.Is(err, commands.ErrUnknown) {
		t.Fatalf("an answer to another kiosk's command: %v", err)
	}

	// Lock: the hub refuses the kiosk's sales and stock loads at once,
	// whatever the kiosk does, until unlocked.
	if _, err := e.h.Commands().Issue(ctx, "kiosk-1", protocol.ActionLock, "suspected stolen", "ann"); err != nil {
		t.Fatal(err)
	}
	if got := nextCommand(t, cmds); got.Action != protocol.ActionLock || got.Message != "suspected stolen" {
		t.Fatalf("command %+v", got)
	}
	var r *protocol.PurchaseResult
	for deadline := time.Now().Add(10 * time.Second); ; {
		r = decode(t, k.ask(purchase("locked-1", "kiosk-1", "1966-F8CF-01", nil)))
		if r.Error != nil && r.Error.Code == protocol.CodeKioskLocked || time.Now().After(deadline) {
			break
		}
	}
	if r.Status != protocol.ResultRejected || r.Error.Code != protocol.CodeKioskLocked {
		t.Fatalf("sale from a locked kiosk: %+v", r)
	}
	if _, err := e.h.Stock().Load(ctx, "kiosk-1", []protocol.SheetSerial{0x1966F8CF}); protocol.AsError(err).Code != protocol.CodeKioskLocked {
		t.Fatalf("stock load by a locked kiosk: %v", err)
	}
	if _, err := e.h.Commands().Issue(ctx, "kiosk-1", protocol.ActionUnlock, "", "ann"); err != nil {
		t.Fatal(err)
	}
	if r := decode(t, k.ask(purchase("unlocked-1", "kiosk-1", "1966-F8CF-01", nil))); r.Status != protocol.ResultOK {
		t.Fatalf("sale after unlock: %+v", r.Error)
	}
	e.check()

	// Bad commands are refused with a code.
	for _, bad := range []struct{ kiosk, action, msg string }{
		{"kiosk-1", "self_destruct", ""},
		{"kiosk-9", protocol.ActionRestart, ""},
		{"kiosk-1", protocol.ActionOutOfService, string(make([]byte, 300))},
	} {
		if _, err := e.h.Commands().Issue(ctx, bad.kiosk, bad.action, bad.msg, "ann"); protocol.AsError(err).Code == protocol.CodeInternal {
			t.Errorf("%+v: untyped %v", bad, err)
		} else if err == nil {
			t.Errorf("%+v accepted", bad)
		}
	}

	// A kiosk offline when the command was given gets it when it comes
	// online, and the command waits until it answers.
	c2, err := e.h.Commands().Issue(ctx, "kiosk-2", protocol.ActionOutOfService, "Back soon", "bob")
	if err != nil {
		t.Fatal(err)
	}
	k2 := e.kiosk("kiosk-2")
	cmds2 := k2.commandsOf(t)
	k2.c.Publish(protocol.KioskTopic("kiosk-2", protocol.TopicStatus), 1, true, protocol.StatusOnline)
	if got := nextCommand(t, cmds2); got.CommandID != c2.CommandID || got.Message != "Back soon" {
		t.Fatalf("command %+v", got)
	}
	if c, _ := e.h.Commands().Get(ctx, c2.CommandID); c.Status != commands.Pending || c.SentAt == nil {
		t.Fatalf("unanswered command %+v", c)
	}
	// Resent while unanswered.
	if err := e.h.Commands().Resend(ctx, e.clock.Now().Add(time.Second)); err != nil {
		t.Fatal(err)
	}
	if got := nextCommand(t, cmds2); got.CommandID != c2.CommandID {
		t.Fatalf("resent %+v", got)
	}
	rej, _ := json.Marshal(protocol.CommandResult{CommandID: c2.CommandID, KioskID: "kiosk-2", Status: protocol.ResultRejected,
		At: time.Now().UTC(), Error: protocol.Errorf(protocol.CodeInvalidRequest, "no")})
	k2.c.Publish(protocol.KioskTopic("kiosk-2", protocol.TopicCommandResult), 1, false, rej)
	e.waitCommand(c2.CommandID, commands.Rejected)
	list, err := e.h.Commands().Of(ctx, "kiosk-1", 10)
	if err != nil || len(list) != 3 || list[0].Action != protocol.ActionUnlock || list[2].IssuedBy != "ann" {
		t.Fatalf("kiosk-1's commands: %+v %v", list, err)
	}
}
