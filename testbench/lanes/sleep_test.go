package lanes_test

import (
	"bufio"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// No test sleeps to wait for another goroutine or process: it waits on a
// condition with testbench/wait. A sleep that paces a simulated device,
// customer or chaos schedule says so with a "// pace:" comment.
func TestNoSleepsAsSynchronisation(t *testing.T) {
	err := filepath.WalkDir("../..", func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() && (d.Name() == "testdata" || d.Name() == "var" || strings.HasPrefix(d.Name(), ".")) && path != "../.." {
			return filepath.SkipDir
		}
		if d.IsDir() || !strings.HasSuffix(path, "_test.go") {
			return nil
		}
		f, err := os.Open(path)
		if err != nil {
			return err
		}
		defer f.Close()
		sc := bufio.NewScanner(f)
		for n := 1; sc.Scan(); n++ {
			line := sc.Text()
			if strings.Contains(line, "time.Sleep(") && !strings.Contains(line, "// pace:") {
				t.Errorf("%s:%d sleeps in a test: wait on a condition (testbench/wait), or say what it paces with // pace:", path, n)
			}
		}
		return sc.Err()
	})
	if err != nil {
		t.Fatal(err)
	}
}
