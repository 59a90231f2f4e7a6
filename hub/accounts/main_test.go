package accounts

import (
	"os"
	"testing"

	"github.com/frank-postage/frank/testbench/pgtest"
)

// TestMain stops the PostgreSQL server the tests share.
func TestMain(m *testing.M) { os.Exit(pgtest.Main(m)) }
