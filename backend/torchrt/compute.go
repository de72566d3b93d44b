package torchrt

import "sync"

// computeMu serialises model computations within the process. libtorch runs
// each caller's parallel regions on an OpenMP thread team that busy-waits
// between regions; two callers at once on the same cores spin against each
// other (measured: a test job ran 40% slower while one denoising stream ran
// beside it, against a few percent when the two take turns).
var computeMu sync.Mutex

// LockCompute takes the process's compute lane until the returned function is
// called. Hold it for one batch or step, not a whole job, so that others get
// turns (sync.Mutex hands over in arrival order once a waiter starves).
// Taking it also sizes the thread team to this process's share of the
// machine's cores (see JoinMachine), on the thread about to compute.
func LockCompute() (unlock func()) {
	computeMu.Lock()
	FitThreads()
	return computeMu.Unlock
}

// FitThreads sizes this OS thread's team to the process's share of the
// machine's cores, as LockCompute does, without taking the lane: for work
// that runs before any model exists (the kernel self-check), which must
// compute at the thread count the model will.
func FitThreads() {
	rebalance()
	fitThisThread()
}

// fitThisThread gives this OS thread the process's thread count when it has
// another. OpenMP keeps the count per thread, and libtorch applies a new
// count only to the thread that sets it and to threads that have not
// computed yet; a goroutine may compute on any thread, one that last
// computed under an older count, or under libtorch's default before the
// process set its own (measured: 1 on a 2-core machine, against 2 after).
func fitThisThread() {
	machine.Lock()
	want := machine.threads
	machine.Unlock()
	if want > 0 && threadCount() != want {
		setThreads(want)
	}
}
