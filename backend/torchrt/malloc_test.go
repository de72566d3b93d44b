package torchrt

import (
	"os"
	"runtime"
	"syscall"
	"testing"

	"github.com/sugarme/gotch"
	"github.com/sugarme/gotch/ts"
)

func TestSetMallocRefusesOutOfRange(t *testing.T) {
	for _, c := range []MallocConfig{
		{MmapThreshold: 64 << 20, TrimThreshold: 1 << 20},
		{MmapThreshold: -1, TrimThreshold: 1 << 20},
		{MmapThreshold: 1 << 20, TrimThreshold: -1},
	} {
		if err := SetMalloc(c); err == nil {
			t.Errorf("SetMalloc(%+v) accepted", c)
		}
	}
}

// minorFaults is the process's count of minor page faults so far.
func minorFaults(t *testing.T) int64 {
	var u syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &u); err != nil {
		t.Fatal(err)
	}
	return u.Minflt
}

// A pass frees its activations and the next allocates them again. With
// diad's thresholds the second and later rounds reuse the pages the first
// one touched; with glibc's adaptive ones the heap's top is handed back after
// every round and each new round faults every page in again (about 4,000 of 4,096
// faults a round here; run with DIAD_MALLOC=glibc to see it fail).
func TestTensorMemoryIsReusedAcrossPasses(t *testing.T) {
	if os.Getenv(MallocEnv) != "" {
		t.Skipf("%s is set: this test checks diad's own setting", MallocEnv)
	}
	if mallocErr != nil {
		t.Fatalf("diad's malloc setting failed: %v", mallocErr)
	}
	runtime.LockOSThread() // one glibc arena throughout
	defer runtime.UnlockOSThread()
	const blocks, floats = 16, 1 << 18 // 16 tensors of 1 MiB
	round := func() {
		var live []*ts.Tensor
		for range blocks {
			x := ts.MustOnes([]int64{floats}, gotch.Float, gotch.CPU) // written: every page touched
			live = append(live, x)
		}
		for _, x := range live {
			x.MustDrop()
		}
	}
	round() // the first round maps the pages
	const rounds = 10
	before := minorFaults(t)
	for range rounds {
		round()
	}
	perRound := float64(minorFaults(t)-before) / rounds
	// 16 MiB is 4,096 pages; a round that reuses them faults on none
	// (a quarter of them allowed: the Go runtime and libtorch fault some
	// pages of their own; 300 here).
	if perRound > 1024 {
		t.Fatalf("%.0f minor page faults per round of %d MiB of tensors: freed tensor memory goes back to the kernel between passes", perRound, blocks)
	}
	t.Logf("%.1f minor page faults per round (%s)", perRound, MallocSetting())
}
