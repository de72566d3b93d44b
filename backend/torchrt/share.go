package torchrt

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// Processes of one machine share its cores. libtorch gives every process
// one intra-op thread per core, and its OpenMP threads spin while they wait:
// two processes on 2 cores then ran at 0.07-0.18 of their speed alone
// (`diad-dev bench sharing`, tiny and demo presets), while with one thread
// each they kept 0.77-0.96. So each diad process that joins the machine
// (JoinMachine) registers in a folder of live processes and, before each
// batch or step (LockCompute), sizes its thread team to its share of the
// cores: all of them alone, cores / n beside n-1 others. Passive waiting
// (OMP_WAIT_POLICY=PASSIVE) also avoided the collapse but cost 0.3-0.6 of
// the speed alone. An explicit thread count (SetThreads, --threads,
// OMP_NUM_THREADS) is left alone.
var machine struct {
	sync.Mutex
	dir      string
	self     *os.File
	selfName string
	explicit bool
	joinErr  error // a failed join is not retried: the process keeps the default
	checked  time.Time
	threads  int
}

// shareRecheck bounds how often a process counts its neighbours.
const shareRecheck = time.Second

// ShareDirEnv overrides the folder of live processes (default: diad-share-UID
// in the system's temporary folder); DIAD_SHARE=off keeps libtorch's
// default of every core for this process.
const (
	ShareDirEnv = "DIAD_SHARE_DIR"
	ShareEnv    = "DIAD_SHARE"
)

// JoinMachine registers this process among the diad processes sharing the
// machine's cores (a file locked for the process's lifetime; the lock ends
// with the process, however it ends). LockCompute calls it on first use, so
// a process counts once it computes (a CLI that only reads results, or a
// benchmark that starts workers, does not).
func JoinMachine() error {
	machine.Lock()
	defer machine.Unlock()
	return joinLocked()
}

func joinLocked() error {
	if machine.self != nil || machine.joinErr != nil || os.Getenv(ShareEnv) == "off" {
		return machine.joinErr
	}
	if os.Getenv("OMP_NUM_THREADS") != "" {
		machine.explicit = true
	}
	dir := os.Getenv(ShareDirEnv)
	if dir == "" {
		dir = filepath.Join(os.TempDir(), "diad-share-"+strconv.Itoa(os.Getuid()))
	}
	fail := func(err error) error {
		machine.joinErr = fmt.Errorf("torchrt: share folder %s: %w", dir, err)
		return machine.joinErr
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fail(err)
	}
	// Locked under a hidden name first, then renamed into view: a
	// neighbour counting meanwhile would take an unlocked file for an
	// ended process's and remove it.
	f, err := os.CreateTemp(dir, ".join-")
	if err != nil {
		return fail(err)
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		f.Close()
		os.Remove(f.Name())
		return fail(err)
	}
	name := filepath.Join(dir, strconv.Itoa(os.Getpid()))
	if err := os.Rename(f.Name(), name); err != nil {
		f.Close()
		os.Remove(f.Name())
		return fail(err)
	}
	machine.dir, machine.self, machine.selfName = dir, f, name
	return nil
}

// LiveProcesses counts the diad processes registered on the machine (this
// one included), removing the files of processes that have ended.
func LiveProcesses() (int, error) {
	machine.Lock()
	dir, self, selfName := machine.dir, machine.self, machine.selfName
	machine.Unlock()
	if self == nil {
		return 1, errors.New("torchrt: not joined (JoinMachine)")
	}
	entries, err := os.ReadDir(dir)
	if err != nil {
		return 1, fmt.Errorf("torchrt: share folder: %w", err)
	}
	n := 0
	for _, e := range entries {
		path := filepath.Join(dir, e.Name())
		if path == selfName {
			n++
			continue
		}
		if strings.HasPrefix(e.Name(), ".") {
			continue // a process joining (see joinLocked)
		}
		f, err := os.Open(path)
		if err != nil {
			continue // gone meanwhile
		}
		if syscall.Flock(int(f.Fd()), syscall.LOCK_SH|syscall.LOCK_NB) != nil {
			n++ // locked: its process lives
		} else {
			os.Remove(path) // an ended process's file
		}
		f.Close()
	}
	return max(n, 1), nil
}

// FairThreads is the thread count of a process among n on this machine.
func FairThreads(n int) int { return max(1, runtime.NumCPU()/max(n, 1)) }

// rebalance sizes the thread team to this process's share of the cores,
// at most once per shareRecheck; it runs on the thread about to compute.
func rebalance() {
	machine.Lock()
	if joinLocked() != nil || machine.self == nil || machine.explicit || time.Since(machine.checked) < shareRecheck {
		machine.Unlock()
		return
	}
	machine.checked = time.Now()
	machine.Unlock()
	n, err := LiveProcesses()
	if err != nil {
		return // not joined: libtorch's default
	}
	want := FairThreads(n)
	machine.Lock()
	defer machine.Unlock()
	if want != machine.threads {
		setThreads(want)
		machine.threads = want
	}
}
