package torchrt

/*
#include <stdint.h>
#include <torch/version.h>
// Defined in gotch's libtch (torch_api.cpp), linked into every diad binary.
extern void at_manual_seed(int64_t);
extern void at_set_num_threads(int);
extern int at_get_num_threads();
extern int at_grad_set_enabled(int);
#ifndef TORCH_VERSION
#define TORCH_VERSION "unknown"
#endif
static const char* diad_torch_version(void) { return TORCH_VERSION; }
*/
import "C"

import (
	"fmt"
	"runtime"
	"strconv"
	"strings"

	"github.com/sugarme/gotch"
)

// LibtorchVersion is the version of the libtorch headers this binary was compiled
// with (torch/version.h), which is also the library it links.
func LibtorchVersion() string { return C.GoString(C.diad_torch_version()) }

// CUDAAvailable reports whether libtorch can use a CUDA device. It is false in
// CPU builds (stubbed CUDA libraries) and on machines without a GPU.
func CUDAAvailable() bool { return gotch.CUDA.IsAvailable() }

// Devices lists usable devices as "cpu", "cuda:0", "cuda:1", ...
func Devices() []string {
	out := []string{"cpu"}
	if CUDAAvailable() {
		n := gotch.CUDA.DeviceCount()
		for i := int64(0); i < n; i++ {
			out = append(out, fmt.Sprintf("cuda:%d", i))
		}
	}
	return out
}

// ParseDevice turns a user's device choice into a gotch device. "auto" picks
// CUDA when available; an explicit CUDA request on a machine without one is an
// error rather than a silent fallback to the CPU.
func ParseDevice(s string) (gotch.Device, error) {
	s = strings.ToLower(strings.TrimSpace(s))
	switch {
	case s == "" || s == "auto":
		if CUDAAvailable() {
			return gotch.CudaBuilder(0), nil
		}
		return gotch.CPU, nil
	case s == "cpu":
		return gotch.CPU, nil
	case s == "cuda" || strings.HasPrefix(s, "cuda:"):
		idx := 0
		if rest, ok := strings.CutPrefix(s, "cuda:"); ok {
			n, err := strconv.Atoi(rest)
			if err != nil || n < 0 {
				return gotch.CPU, fmt.Errorf("device %q: bad CUDA index", s)
			}
			idx = n
		}
		if !CUDAAvailable() {
			return gotch.CPU, fmt.Errorf("device %q: CUDA is not available in this build/machine (devices: %s)", s, strings.Join(Devices(), ", "))
		}
		if int64(idx) >= gotch.CUDA.DeviceCount() {
			return gotch.CPU, fmt.Errorf("device %q: only %d CUDA devices", s, gotch.CUDA.DeviceCount())
		}
		return gotch.CudaBuilder(uint(idx)), nil
	default:
		return gotch.CPU, fmt.Errorf("device %q: want cpu, cuda, cuda:N or auto", s)
	}
}

// SetThreads sets libtorch's intra-op thread count (n <= 0 leaves it
// unchanged, and to the machine's share, see JoinMachine). A count set here
// is kept.
func SetThreads(n int) {
	if n > 0 {
		machine.Lock()
		machine.explicit, machine.threads = true, n
		machine.Unlock()
		setThreads(n)
	}
}

func setThreads(n int) { C.at_set_num_threads(C.int(n)) }

// threadCount is the intra-op thread count of libtorch calls made now on
// this OS thread: OpenMP keeps it per thread.
func threadCount() int { return int(C.at_get_num_threads()) }

// Threads is the intra-op thread count this OS thread computes with, once
// given the process's count if one was chosen (SetThreads, or the machine's
// share after the first LockCompute or FitThreads). It does not join the
// machine's share itself: a process only asking (diad version, a server's
// status) must not take cores from its neighbours.
func Threads() int {
	fitThisThread()
	return threadCount()
}

// ManualSeed seeds libtorch's global generators (CPU and CUDA), which every random
// tensor op without an explicit generator draws from.
func ManualSeed(seed int64) { C.at_manual_seed(C.int64_t(seed)) }

// DeviceName is the inverse of ParseDevice.
func DeviceName(d gotch.Device) string {
	if d.Name == "CUDA" {
		return fmt.Sprintf("cuda:%d", d.Value)
	}
	return "cpu"
}

// Pin locks the calling goroutine to its OS thread until the returned function
// is called. libtorch keeps per-thread state that gotch relies on between two
// cgo calls (grad mode, and gotch's last-error slot read after every op), so
// any goroutine running a sequence of tensor operations must stay on one
// thread. Pins nest.
func Pin() (unpin func()) {
	runtime.LockOSThread()
	return runtime.UnlockOSThread
}

// setGradEnabled sets this thread's grad mode and returns the previous one.
// (gotch's GradSetEnabled reads the C int result as a Go int, so its "previous
// state" is garbage.)
func setGradEnabled(on bool) (prev bool) {
	v := C.int(0)
	if on {
		v = 1
	}
	return C.at_grad_set_enabled(v) == 1
}

// NoGrad runs f with gradient recording off on this thread, restoring the
// previous mode afterwards (gotch's ts.NoGrad neither pins the thread nor
// restores a disabled mode).
func NoGrad(f func()) {
	defer Pin()()
	prev := setGradEnabled(false)
	defer setGradEnabled(prev)
	f()
}

// WithGrad runs f with gradient recording on on this thread, restoring the
// previous mode afterwards (for work that needs a backward pass whatever its
// caller's mode, such as the kernel self-check).
func WithGrad(f func()) {
	defer Pin()()
	prev := setGradEnabled(true)
	defer setGradEnabled(prev)
	f()
}

// GradEnabled reports this thread's grad mode (pin the goroutine to rely on it).
func GradEnabled() bool {
	prev := setGradEnabled(true)
	setGradEnabled(prev)
	return prev
}
