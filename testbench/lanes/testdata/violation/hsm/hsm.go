// Package hsm breaks its lane: it imports a ledger.
package hsm

import _ "github.com/frank-postage/frank/hub/ledger"
