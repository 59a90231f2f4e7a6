//go:build !crashtest

package main

import (
	"context"
	"log/slog"

	"github.com/frank-postage/frank/appliance/kiosk"
)

// armCrash does nothing: a production kiosk has no way to kill itself.
func armCrash(*kiosk.Kiosk) {}

// breakRelease does nothing: only test builds can be broken on purpose.
func breakRelease(context.Context, *slog.Logger) {}
