package hub_test

import (
	"context"
	"net"
	"testing"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"

	"github.com/frank-postage/frank/appliance/identity"
	"github.com/frank-postage/frank/protocol"
	"github.com/frank-postage/frank/testbench/wait"
)

// A store whose staff the hub manages is never told, by a config the hub
// built while it could not read the fleet (a database hiccup), that its
// staff are not managed: the kiosk would admit its own file's PIN and
// badges again, which every revoked member knew, and the config stays
// retained. Nothing is sent until the fleet reads again.
func TestNoConfigSentWhileTheFleetCannotBeRead(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	ctx := context.Background()
	k := e.kiosk("kiosk-1")
	cfgs := k.configsOf(t)
	if err := e.h.CentralConfig().AddStaff(ctx, "store-a", "alice", "1357", "", "ann"); err != nil {
		t.Fatal(err)
	}
	waitConfig(t, cfgs, "store-a managed", func(c protocol.KioskConfig) bool { return c.StaffManaged })

	db := e.openDB()
	defer db.Close()
	if _, err := db.ExecContext(ctx, `ALTER TABLE kiosks RENAME TO kiosks_gone`); err != nil {
		t.Fatal(err)
	}
	renamed := true
	back := func() {
		if renamed {
			if _, err := db.ExecContext(ctx, `ALTER TABLE kiosks_gone RENAME TO kiosks`); err != nil {
				t.Fatal(err)
			}
			renamed = false
		}
	}
	defer back()
	e.h.Fleet().Forget("kiosk-1")
	k.c.Publish(protocol.KioskTopic("kiosk-1", protocol.TopicStatus), 1, true, protocol.StatusOnline).Wait()
	wait.Never(t, 3*time.Second, "a config without the store's staff while the fleet cannot be read", func() bool {
		select {
		case c := <-cfgs:
			return !c.StaffManaged
		default:
			return false
		}
	})
	back()
	k.c.Publish(protocol.KioskTopic("kiosk-1", protocol.TopicStatus), 1, true, protocol.StatusOnline).Wait()
	waitConfig(t, cfgs, "store-a's staff once the fleet reads again", func(c protocol.KioskConfig) bool { return c.StaffManaged && c.Store == "store-a" })
}

// A kiosk moved to another store (one that never sold) gets its new
// store's config, staff list and name at the leader's next tick, though
// it stays connected: the kiosk then ends its staff sessions.
func TestMovedKioskGetsItsNewStoresConfig(t *testing.T) {
	t.Parallel()
	e := newTLSEnv(t)
	ctx := context.Background()
	cc := e.h.CentralConfig()
	if err := cc.AddStaff(ctx, "store-a", "alice", "1357", "", "ann"); err != nil {
		t.Fatal(err)
	}
	if err := cc.AddStaff(ctx, "store-b", "bob", "2468", "", "ann"); err != nil {
		t.Fatal(err)
	}
	code, pin := e.enrollCode("kiosk-9", "store-a")
	files := identity.In(t.TempDir())
	if _, err := identity.Enroll(ctx, e.h.URL(), code, pin, files); err != nil {
		t.Fatal(err)
	}
	id, err := identity.Load(files, e.h.URL(), pin, e.clock.Now)
	if err != nil {
		t.Fatal(err)
	}
	host, _, _ := net.SplitHostPort(e.h.BrokerTLSAddr)
	c := mqtt.NewClient(mqtt.NewClientOptions().AddBroker("mqtts://" + e.h.BrokerTLSAddr).SetClientID("kiosk-9").
		SetTLSConfig(id.ClientTLS(host)).SetAutoReconnect(false).SetOrderMatters(false))
	if tok := c.Connect(); !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
		t.Fatal(tok.Error())
	}
	defer c.Disconnect(50)
	k := &kioskClient{t: t, id: "kiosk-9", c: c}
	cfgs := k.configsOf(t)
	c.Publish(protocol.KioskTopic("kiosk-9", protocol.TopicStatus), 1, true, protocol.StatusOnline).Wait()
	waitConfig(t, cfgs, "store-a's staff", func(c protocol.KioskConfig) bool { return c.Store == "store-a" && len(c.StaffNames) == 1 })
	e.h.Round()   // the leader has followed the staff changes: nothing else pushes
	e.h.Tick(ctx) // the tables and stores in force noted

	if _, err := e.h.Fleet().Add(ctx, "kiosk-9", "store-b"); err != nil { // hub kiosk add kiosk-9 --store store-b
		t.Fatal(err)
	}
	e.h.Tick(ctx)
	waitConfig(t, cfgs, "store-b's staff", func(c protocol.KioskConfig) bool {
		return c.Store == "store-b" && len(c.StaffNames) == 1 && c.StaffNames[0] == "bob"
	})
	if !c.IsConnected() {
		t.Fatal("the moved kiosk was cut off: the test would pass for its reconnecting")
	}
}
