package pgtest_test

import (
	"github.com/frank-postage/frank/testbench/pgtest"
	"testing"
)

func TestStart(t *testing.T) {
	s, err := pgtest.Start()
	if err != nil {
		t.Fatal(err)
	}
	defer s.Stop()
	u, err := s.NewDatabase("x1")
	if err != nil {
		t.Fatal(err)
	}
	t.Log(u)
}
