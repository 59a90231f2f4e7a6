package hub

// KioskStatusOffline does what the front does with an "offline" status
// kioskID publishes, without the broker in between.
func KioskStatusOffline(h *Hub, kioskID string) { kioskWatch{h}.Offline(kioskID) }

// KioskStatusOnline does what the front does with an "online" status.
func KioskStatusOnline(h *Hub, kioskID string) { kioskWatch{h}.Online(kioskID) }
