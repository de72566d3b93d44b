// Package torchtest has helpers for tests and benchmarks that check libtorch
// memory: how many gotch tensor handles are alive and the process's RSS.
package torchtest

import (
	"os"
	"runtime"
	"runtime/debug"
	"strconv"
	"strings"
	"testing"

	"github.com/sugarme/gotch/ts"
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

// RSSMiB is the process's resident set size (VmRSS) in MiB.
func RSSMiB() float64 { return procStatus("VmRSS:") }

// PeakRSSMiB is the process's peak resident set size (VmHWM) in MiB.
func PeakRSSMiB() float64 { return procStatus("VmHWM:") }

func procStatus(key string) float64 {
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return -1
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, key); ok {
			f := strings.Fields(v)
			if len(f) > 0 {
				kb, _ := strconv.ParseFloat(f[0], 64)
				return kb / 1024
			}
		}
	}
	return -1
}

// Settle runs the collector twice so pending gotch finalizers free their tensors.
func Settle() {
	runtime.GC()
	runtime.GC()
}

// RequireNoLeak fails t when f leaves extra tensor handles alive.
func RequireNoLeak(t testing.TB, what string, keep int, f func()) {
	t.Helper()
	if n := NoGC(f); n != keep {
		t.Fatalf("%s leaves %d tensor handles alive, want %d", what, n, keep)
	}
}

// ResetPeakRSS resets the kernel's peak-RSS counter (VmHWM) so that the next
// PeakRSSMiB measures from now on; it is a no-op where /proc does not allow it.
func ResetPeakRSS() { _ = os.WriteFile("/proc/self/clear_refs", []byte("5"), 0) }

// GotchBytesLeakedPerOp is what each gotch operation loses for good: its
// generated Go wrappers allocate the C out-pointer with malloc(0), which glibc
// serves as a 32-byte chunk, and never free it. ts.TensorCount counts the
// operations (one new tensor each).
const GotchBytesLeakedPerOp = 32
