// Package ledger breaks its lane: it imports the testbench.
package ledger

import _ "github.com/frank-postage/frank/testbench/cards"
