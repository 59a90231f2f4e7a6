//go:build !crashtest

package kiosk

// crashPoint is empty in a production build: the power-cut tests' hook
// (crash_hook.go, -tags crashtest) is not in it.
type crashPoint struct{}

func (k *Kiosk) step(string) { _ = k.crash }
