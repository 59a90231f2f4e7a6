// Package kiosk breaks its lane: it imports the hub.
package kiosk

import (
	_ "github.com/frank-postage/frank/hub/ledger"
	_ "github.com/frank-postage/frank/protocol"
)
