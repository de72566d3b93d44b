package torchrt

import (
	"os"
	"path/filepath"
	"runtime"
	"syscall"
	"testing"
	"time"
)

// freshShare points the share at dir and forgets the process's share state
// (environment restored when the test ends); it returns the thread count the
// process had chosen.
func freshShare(t *testing.T, dir string) (prevThreads int) {
	t.Setenv(ShareDirEnv, dir)
	t.Setenv(ShareEnv, "")
	t.Setenv("OMP_NUM_THREADS", "") // restored when the test ends
	if err := os.Unsetenv("OMP_NUM_THREADS"); err != nil {
		t.Fatal(err)
	}
	machine.Lock()
	defer machine.Unlock()
	prevThreads = machine.threads
	if machine.self != nil {
		machine.self.Close()
	}
	machine.self, machine.joinErr, machine.explicit, machine.checked, machine.threads = nil, nil, false, time.Time{}, 0
	return prevThreads
}

// Processes register in the share folder while they live; a process's
// thread team follows the count of live processes; an ended process's
// file is cleaned up.
func TestMachineShare(t *testing.T) {
	dir := t.TempDir()
	prev := freshShare(t, dir)
	before := Threads()
	// Asking is not computing: a process that only reports its thread
	// count (diad version, a server's status) takes no share.
	if entries, err := os.ReadDir(dir); err != nil || len(entries) != 0 {
		t.Fatalf("Threads() joined the machine's share: %d entries in %s (%v)", len(entries), dir, err)
	}
	defer func() {
		setThreads(before)
		machine.Lock()
		machine.threads = prev
		machine.Unlock()
	}()
	defer Pin()()
	unlock := LockCompute() // joins
	unlock()
	if n, err := LiveProcesses(); err != nil || n != 1 {
		t.Fatalf("alone: %d live, %v", n, err)
	}
	if got := Threads(); got != runtime.NumCPU() {
		t.Fatalf("alone: %d threads, want all %d cores", got, runtime.NumCPU())
	}
	// A second process: a file locked through another open file
	// description (flock locks conflict between descriptions as between
	// processes; a process's end closes its descriptions).
	other := filepath.Join(dir, "999999")
	o, err := os.Create(other)
	if err != nil {
		t.Fatal(err)
	}
	if err := syscall.Flock(int(o.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		t.Fatal(err)
	}
	if n, err := LiveProcesses(); err != nil || n != 2 {
		t.Fatalf("beside one other: %d live, %v", n, err)
	}
	machine.Lock()
	machine.checked = time.Time{}
	machine.Unlock()
	unlock = LockCompute()
	unlock()
	if got, want := Threads(), FairThreads(2); got != want {
		t.Fatalf("beside one other: %d threads, want %d", got, want)
	}
	o.Close() // the other process ends
	if n, err := LiveProcesses(); err != nil || n != 1 {
		t.Fatalf("after the other ended: %d live, %v", n, err)
	}
	if _, err := os.Stat(other); !os.IsNotExist(err) {
		t.Fatalf("the ended process's file is still there: %v", err)
	}
	machine.Lock()
	machine.checked = time.Time{}
	machine.Unlock()
	unlock = LockCompute()
	unlock()
	if got := Threads(); got != runtime.NumCPU() {
		t.Fatalf("alone again: %d threads, want %d", got, runtime.NumCPU())
	}
	// An explicit count is kept.
	SetThreads(1)
	machine.Lock()
	machine.checked = time.Time{}
	machine.Unlock()
	unlock = LockCompute()
	unlock()
	if Threads() != 1 {
		t.Fatalf("explicit 1 thread became %d", Threads())
	}
}

// TestLockComputeFitsTheThreadItRunsOn: a thread that last computed under
// another thread count (as one left from before the process chose its count
// does) computes at the process's count once it takes the compute lane.
func TestLockComputeFitsTheThreadItRunsOn(t *testing.T) {
	defer Pin()()
	machine.Lock()
	explicit, threads := machine.explicit, machine.threads
	machine.Unlock()
	t.Cleanup(func() {
		machine.Lock()
		machine.explicit, machine.threads = explicit, threads
		machine.Unlock()
	})
	const want = 2
	SetThreads(want) // the process's count
	setThreads(1)    // this thread now counts differently, as a stale one would
	if threadCount() != 1 {
		t.Fatalf("setup: the thread counts %d, want 1", threadCount())
	}
	unlock := LockCompute()
	got := threadCount()
	unlock()
	if got != want {
		t.Fatalf("inside the compute lane the thread computes with %d threads, the process with %d", got, want)
	}
	if n := Threads(); n != want {
		t.Fatalf("Threads() = %d, want the process's %d", n, want)
	}
}
