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
	rebalance()
	return computeMu.Unlock
}

// FitThreads sizes this OS thread's team to the process's share of the
// machine's cores, as LockCompute does, without taking the lane: for work
// that runs before any model exists (the kernel self-check), which must
// compute at the thread count the model will.
func FitThreads() { rebalance() }
