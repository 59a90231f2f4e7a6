package hub

// HearsPeers says whether the hub hears the other hubs' notifications and
// has read the heartbeats it missed before: until then it judges no kiosk
// silent, and silence counts from that read.
func (h *Hub) HearsPeers() bool {
	h.peers.mu.Lock()
	defer h.peers.mu.Unlock()
	return h.peers.listening && h.peers.synced
}
