package web_test

import (
	"os"
	"testing"

	"github.com/frank-postage/frank/testbench/pgtest"
)

func TestMain(m *testing.M) { os.Exit(pgtest.Main(m)) }
