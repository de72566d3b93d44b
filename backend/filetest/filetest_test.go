package filetest

import (
	"path/filepath"
	"testing"
)

// fakeT records a failure instead of ending the goroutine, so that the
// helpers' failure path can be checked.
type fakeT struct {
	testing.TB
	failed bool
}

func (f *fakeT) Helper()           {}
func (f *fakeT) Fatal(args ...any) { f.failed = true }

func TestReadWriteAndTheirFailures(t *testing.T) {
	p := filepath.Join(t.TempDir(), "f")
	Write(t, p, []byte("one"))
	if got := string(Read(t, p)); got != "one" {
		t.Fatalf("read %q", got)
	}
	ft := &fakeT{}
	Read(ft, filepath.Join(t.TempDir(), "absent"))
	if !ft.failed {
		t.Fatal("reading an absent file did not fail the test")
	}
	ft = &fakeT{}
	Write(ft, filepath.Join(t.TempDir(), "no", "such", "dir", "f"), nil)
	if !ft.failed {
		t.Fatal("writing into an absent folder did not fail the test")
	}
}
