package hub

import (
	"context"
	"time"

	"github.com/frank-postage/frank/hub/settings"
	"github.com/frank-postage/frank/protocol"
)

// configFor builds a kiosk's retained config: the rate table in force in
// its store's time zone, the heartbeat, and ops' central settings and
// staff for it. A kiosk the fleet does not know (or retired) gets the
// config without them.
func (h *Hub) configFor(kioskID string) (protocol.KioskConfig, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	k, kerr := h.fleet.Get(ctx, kioskID)
	now := h.clockNow()
	if k.Zone != nil {
		now = now.In(k.Zone) // the table in force where the kiosk sells
	}
	rt, err := h.rates.Current(now)
	if err != nil {
		return protocol.KioskConfig{}, err
	}
	c := protocol.KioskConfig{KioskID: kioskID, HeartbeatS: h.cfg.HeartbeatS, Rates: rt}
	if protocol.AsError(kerr).Code == protocol.CodeUnknownKiosk {
		return c, nil
	}
	if kerr != nil {
		// Not "unknown": a config without the store's staff would put the
		// kiosk's own file's PIN back in force, and stay retained.
		return protocol.KioskConfig{}, kerr
	}
	c.Store = k.Store
	if c.StoreName, err = h.fleet.StoreName(ctx, k.Store); err != nil {
		return c, err
	}
	v, staff, managed, err := h.settings.For(ctx, kioskID, k.Store)
	if err != nil {
		return c, err
	}
	// A kiosk may beat faster than the hub's period, never slower: the
	// hub judges silence by its own.
	if v.HeartbeatS != 0 && v.HeartbeatS < c.HeartbeatS {
		c.HeartbeatS = v.HeartbeatS
	}
	v.HeartbeatS = c.HeartbeatS
	c.Settings, c.StaffNames, c.StaffManaged = v, staff, managed
	h.kioskSettings.Store(kioskID, v)
	return c, nil
}

// thresholds are a kiosk's supply alert thresholds: its central settings,
// else the hub's flags.
func (h *Hub) thresholds(kioskID string) (labelsLow int, paperAlert string) {
	labelsLow, paperAlert = h.cfg.LabelsLow, h.cfg.PaperAlert
	if v, ok := h.kioskSettings.Load(kioskID); ok {
		s := v.(protocol.KioskSettings)
		if s.LabelsLow != 0 {
			labelsLow = s.LabelsLow
		}
		if s.PaperAlert != "" {
			paperAlert = s.PaperAlert
		}
	}
	return labelsLow, paperAlert
}

// pushConfigs publishes again the config of every kiosk in scope (the
// fleet, a store or one kiosk), after its settings or staff changed.
func (h *Hub) pushConfigs(ctx context.Context, scope string) error {
	ks, err := h.fleet.List(ctx)
	if err != nil {
		return err
	}
	for _, k := range ks {
		if k.Retired != nil {
			continue
		}
		if scope == settings.Fleet || scope == settings.StoreScope(k.Store) || scope == settings.KioskScope(k.ID) {
			h.front.PushConfig(k.ID)
		}
	}
	return nil
}

// followConfig pushes every kiosk's config again once the central config
// changed elsewhere (another hub, the command line); one hub does it.
func (h *Hub) followConfig(ctx context.Context) {
	changed, err := h.settings.Changed(ctx)
	if err != nil || changed == h.configSeen || !h.leader.Held() {
		return
	}
	if err := h.pushConfigs(ctx, settings.Fleet); err != nil {
		h.log.Error("kiosk configs not pushed after a change; tried again", "err", err)
		return
	}
	h.configSeen = changed
	h.log.Info("kiosk configs pushed after a change to the central config")
}

// Settings is the kiosks' central configuration.
func (h *Hub) Settings() *settings.Settings { return h.settings }

// CentralConfig changes the central configuration and pushes the configs
// it changes at once: the console and operator API use it.
type CentralConfig struct{ h *Hub }

// CentralConfig returns the central configuration for the console.
func (h *Hub) CentralConfig() CentralConfig { return CentralConfig{h} }

func (c CentralConfig) Set(ctx context.Context, scope string, v protocol.KioskSettings, by string) error {
	if err := c.h.settings.Set(ctx, scope, v, by); err != nil {
		return err
	}
	return c.h.pushConfigs(ctx, scope)
}

// SetIf is Set if the scope's settings are still those revision names
// (settings.Revision).
func (c CentralConfig) SetIf(ctx context.Context, scope string, v protocol.KioskSettings, by, revision string) error {
	if err := c.h.settings.SetIf(ctx, scope, v, by, revision); err != nil {
		return err
	}
	return c.h.pushConfigs(ctx, scope)
}

func (c CentralConfig) Get(ctx context.Context, scope string) (protocol.KioskSettings, error) {
	return c.h.settings.Get(ctx, scope)
}

func (c CentralConfig) AddStaff(ctx context.Context, storeID, name, pin, badge, by string) error {
	if err := c.h.settings.AddStaff(ctx, storeID, name, pin, badge, by); err != nil {
		return err
	}
	return c.h.pushConfigs(ctx, settings.StoreScope(storeID))
}

func (c CentralConfig) RevokeStaff(ctx context.Context, storeID, name, by string) error {
	if err := c.h.settings.RevokeStaff(ctx, storeID, name, by); err != nil {
		return err
	}
	return c.h.pushConfigs(ctx, settings.StoreScope(storeID))
}

func (c CentralConfig) Staff(ctx context.Context, storeID string) ([]settings.Member, error) {
	return c.h.settings.Staff(ctx, storeID)
}
