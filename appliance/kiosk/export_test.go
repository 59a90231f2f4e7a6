package kiosk

import "time"

// SetMonotonic makes elapsed the kiosk's monotonic clock: how long it has
// run, which a test moves with its wall clock or leaves when it steps it.
func SetMonotonic(c *Config, elapsed func() time.Duration) { c.monotonic = elapsed }
