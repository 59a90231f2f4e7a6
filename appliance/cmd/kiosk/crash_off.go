//go:build !crashtest

package main

import "github.com/frank-postage/frank/appliance/kiosk"

// armCrash does nothing: a production kiosk has no way to kill itself.
func armCrash(*kiosk.Kiosk) {}
