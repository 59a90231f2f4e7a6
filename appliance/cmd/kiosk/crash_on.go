//go:build crashtest

package main

import (
	"os"

	"github.com/frank-postage/frank/appliance/kiosk"
)

// armCrash reads the power-cut tests' FRANK_KIOSK_CRASH_AT; only binaries
// built with -tags crashtest have it.
func armCrash(k *kiosk.Kiosk) {
	if step := os.Getenv("FRANK_KIOSK_CRASH_AT"); step != "" {
		k.CrashAt(step)
	}
}
