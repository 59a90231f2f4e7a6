// Package protocol breaks its lane: it imports the HSM, and through it the
// hub and the testbench.
package protocol

import _ "github.com/frank-postage/frank/hsm"
