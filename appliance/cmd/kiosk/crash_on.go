//go:build crashtest

package main

import (
	"context"
	"log/slog"
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

// brokenRelease, set with -ldflags "-X main.brokenRelease=yes", builds a
// release that never becomes healthy, for the rollback tests.
var brokenRelease string

// breakRelease holds a broken release before it connects, until it is
// stopped.
func breakRelease(ctx context.Context, log *slog.Logger) {
	if brokenRelease == "" {
		return
	}
	log.Error("this release is broken on purpose (tests): it never connects")
	<-ctx.Done()
	os.Exit(1)
}
