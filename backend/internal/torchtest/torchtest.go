// Package torchtest has helpers for tests and benchmarks that check libtorch
// memory: how many gotch tensor handles are alive and the process's RSS.
package torchtest

import (
	"runtime"
	"runtime/debug"
	"testing"
	"time"

	"github.com/sugarme/gotch/ts"

	"github.com/diad-project/diad/backend/torchrt"
)

// LiveTensors counts gotch tensor handles that have not been freed (the
// patched gotch counts them as it makes and frees them).
func LiveTensors() int { return int(ts.LiveTensors()) }

// NoGC runs f with the garbage collector off, so that gotch's finalizers cannot
// free forgotten handles behind the test's back, and returns how many more
// tensor handles are alive afterwards. The finalizers of what earlier code
// dropped run first: run during f, they would free handles f did not make.
func NoGC(f func()) int {
	drainFinalizers()
	prev := debug.SetGCPercent(-1)
	defer debug.SetGCPercent(prev)
	before := LiveTensors()
	f()
	return LiveTensors() - before
}

// finalizerSentinel is big enough, and holds a pointer, so that the
// allocator gives it its own block: finalizers of tiny pointer-free objects
// may never run.
type finalizerSentinel struct {
	pad  [32]byte
	next *finalizerSentinel
}

// drainFinalizers runs the collector and waits until the finalizers it
// queued have run (the runtime runs them one after another; a sentinel
// queued with them marks their end), twice: a finalizer may free what the
// next collection finds unreachable.
func drainFinalizers() {
	for range 2 {
		done := make(chan struct{})
		s := &finalizerSentinel{}
		runtime.SetFinalizer(s, func(*finalizerSentinel) { close(done) })
		s = nil
		runtime.GC()
		select {
		case <-done:
		case <-time.After(2 * time.Second): // never expected; a count taken anyway
		}
	}
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
