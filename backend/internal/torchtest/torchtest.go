// Package torchtest has helpers for tests and benchmarks that check libtorch
// memory: how many gotch tensor handles are alive and the process's RSS.
package torchtest

import (
	"runtime"
	"runtime/debug"
	"strings"
	"testing"

	"github.com/sugarme/gotch/ts"

	"github.com/diad-project/diad/backend/torchrt"
)

// LiveTensors counts gotch tensor handles that have not been freed. gotch keeps
// every live handle's name in a registry; names contain no quotes.
func LiveTensors() int {
	msg := ts.CheckCMemLeak()
	i := strings.Index(msg, "Tensors not been released: [")
	if i < 0 {
		return -1
	}
	rest := msg[i:]
	rest = rest[:strings.Index(rest, "]")]
	return strings.Count(rest, `"`) / 2
}

// NoGC runs f with the garbage collector off, so that gotch's finalizers cannot
// free forgotten handles behind the test's back, and returns how many more
// tensor handles are alive afterwards.
func NoGC(f func()) int {
	prev := debug.SetGCPercent(-1)
	defer debug.SetGCPercent(prev)
	before := LiveTensors()
	f()
	return LiveTensors() - before
}

// RSSMiB is the process's resident set size in MiB.
func RSSMiB() float64 { return torchrt.RSSMiB() }

// PeakRSSMiB is the process's peak resident set size in MiB.
func PeakRSSMiB() float64 { return torchrt.PeakRSSMiB() }

// Settle runs the collector twice so pending gotch finalizers free their
// tensors, then returns freed memory to the OS so RSS counts live memory only.
func Settle() {
	runtime.GC()
	runtime.GC()
	torchrt.TrimHeap()
}

// RequireNoLeak fails t when f leaves extra tensor handles alive.
func RequireNoLeak(t testing.TB, what string, keep int, f func()) {
	t.Helper()
	if n := NoGC(f); n != keep {
		t.Fatalf("%s leaves %d tensor handles alive, want %d", what, n, keep)
	}
}

// ResetPeakRSS restarts the peak-RSS counter or fails tb.
func ResetPeakRSS(tb testing.TB) {
	tb.Helper()
	if err := torchrt.ResetPeakRSS(); err != nil {
		tb.Fatal(err)
	}
}

// GotchBytesLeakedPerOp is what each gotch operation loses for good: its
// generated Go wrappers allocate the C out-pointer with malloc(0), which glibc
// serves as a 32-byte chunk, and never free it. ts.TensorCount counts the
// operations (one new tensor each).
const GotchBytesLeakedPerOp = 32
