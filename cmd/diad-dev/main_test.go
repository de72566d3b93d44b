package main

import (
	"os"
	"strconv"
	"strings"
	"testing"

	"github.com/diad-project/diad/backend/cli"
	"github.com/diad-project/diad/backend/cli/clitest"
)

// TestMain lets a test run the real main() in a child process (the test
// binary re-executed), to see its exit status.
func TestMain(m *testing.M) {
	cli.ServeChild("diad-dev", main)
	os.Exit(m.Run())
}

// runMain runs `diad-dev args...` as a process and returns its output and exit code.
func runMain(t *testing.T, args ...string) (string, int) { return clitest.RunMain(t, args...) }

// The product CLI does not carry the harnesses, and diad-dev does.
func TestHarnessesLiveHere(t *testing.T) {
	out, code := runMain(t, "bench", "--help")
	if code != 0 {
		t.Fatalf("exit %d\n%s", code, out)
	}
	for _, sub := range []string{"torch", "sharing", "recompute", "profile", "kernels"} {
		if !strings.Contains(out, "\n  "+sub+" ") {
			t.Errorf("diad-dev bench --help lacks %s:\n%s", sub, out)
		}
	}
}

// bench sharing runs its workers alone and side by side for each policy
// and reports both throughputs.
func TestBenchSharingReports(t *testing.T) {
	if testing.Short() {
		t.Skip("starts 8 processes")
	}
	out, code := runMain(t, "bench", "sharing", "--seconds", "0.3", "--batch", "1", "--policies", "DIAD_SHARE=off,share")
	if code != 0 {
		t.Fatalf("exit %d\n%s", code, out)
	}
	rows := 0
	for _, line := range strings.Split(out, "\n") {
		f := strings.Fields(line)
		if len(f) == 6 && (f[1] == "train" || f[1] == "recon") {
			for _, v := range f[2:] {
				if x, err := strconv.ParseFloat(v, 64); err != nil || !(x > 0) {
					t.Fatalf("value %q in %q", v, line)
				}
			}
			rows++
		}
	}
	if rows != 4 {
		t.Fatalf("%d result rows, want 4:\n%s", rows, out)
	}
}
