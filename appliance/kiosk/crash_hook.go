//go:build crashtest

package kiosk

import (
	"fmt"
	"os"
	"syscall"
)

// crashPoint is where the power-cut tests make the kiosk die. It exists
// only in binaries built with -tags crashtest, never in one for a store.
type crashPoint struct {
	at    string
	steps map[string]int
}

// CrashAt makes the kiosk kill itself with SIGKILL when a sale reaches
// step (begun, answered, printing, printed, reported; "printed:2" for the
// second label): the power-cut tests.
func (k *Kiosk) CrashAt(step string) { k.crash = crashPoint{at: step, steps: map[string]int{}} }

func (k *Kiosk) step(name string) {
	if k.crash.at == "" {
		return
	}
	k.crash.steps[name]++
	if k.crash.at == name || k.crash.at == fmt.Sprintf("%s:%d", name, k.crash.steps[name]) {
		k.log.Warn("crashing on purpose", "step", name)
		syscall.Kill(os.Getpid(), syscall.SIGKILL)
		select {} // SIGKILL is not instant
	}
}
