package torchrt

/*
#include <malloc.h>
*/
import "C"

import (
	"fmt"
	"os"
	"strconv"
	"strings"
)

// libtorch takes every CPU tensor's memory from glibc's malloc. glibc serves
// a block above its mmap threshold (128 KiB at first, rising to the largest
// block freed so far) with a fresh mmap, and hands the top of its heap back
// once more than twice that threshold lies free there. A denoiser pass frees
// and allocates the same activations again and again, so both send it back
// to the kernel: a new mapping, and a page fault on each of its pages, for
// most activations of every pass. With the thresholds fixed high, the pages
// stay with the process and the next pass reuses them.
//
// The cost is resident memory: what a pass frees stays mapped, up to the
// trim threshold above the heap's live top (TrimHeap still hands it all
// back). The allocations of one pass recur in the next, so the resident set
// stays at the largest pass's working set instead of growing.

// MallocConfig is glibc malloc's two thresholds, in bytes (mallopt
// M_MMAP_THRESHOLD and M_TRIM_THRESHOLD).
type MallocConfig struct {
	// MmapThreshold is the smallest block served by its own mapping
	// (glibc allows at most 32 MiB on 64-bit systems).
	MmapThreshold int
	// TrimThreshold is how much free memory the heap's top keeps before
	// glibc returns it to the kernel.
	TrimThreshold int
}

// TensorMalloc is diad's setting: activations up to 32 MiB (a batch of 8
// demo-size feature maps is ~2 MiB; a paper-size one ~40) come from the
// heap, and up to 512 MiB of freed heap stays mapped.
var TensorMalloc = MallocConfig{MmapThreshold: 32 << 20, TrimThreshold: 512 << 20}

// MallocEnv set to "glibc" keeps glibc's own adaptive thresholds (for
// measuring the difference, or on a machine short of memory).
const MallocEnv = "DIAD_MALLOC"

// SetMalloc sets glibc's thresholds for the whole process. Once set, glibc
// no longer adapts them.
func SetMalloc(c MallocConfig) error {
	if c.MmapThreshold < 0 || c.MmapThreshold > 32<<20 || c.TrimThreshold < 0 {
		return fmt.Errorf("torchrt: malloc thresholds %+v out of range (mmap 0..32 MiB, trim >= 0)", c)
	}
	if C.mallopt(C.M_MMAP_THRESHOLD, C.int(c.MmapThreshold)) != 1 {
		return fmt.Errorf("torchrt: glibc refused M_MMAP_THRESHOLD %d", c.MmapThreshold)
	}
	if C.mallopt(C.M_TRIM_THRESHOLD, C.int(c.TrimThreshold)) != 1 {
		return fmt.Errorf("torchrt: glibc refused M_TRIM_THRESHOLD %d", c.TrimThreshold)
	}
	return nil
}

// MallocSetting says which thresholds this process runs with: "glibc"
// (adaptive, DIAD_MALLOC=glibc), or diad's, as set at start.
func MallocSetting() string {
	if mallocErr != nil {
		return "glibc (" + mallocErr.Error() + ")"
	}
	if strings.EqualFold(os.Getenv(MallocEnv), "glibc") {
		return "glibc"
	}
	return "mmap threshold " + mib(TensorMalloc.MmapThreshold) + ", trim threshold " + mib(TensorMalloc.TrimThreshold)
}

func mib(n int) string { return strconv.Itoa(n>>20) + " MiB" }

// mallocErr is why diad's setting could not be made at start (nil: made, or
// not asked for).
var mallocErr error

func init() {
	switch v := os.Getenv(MallocEnv); {
	case strings.EqualFold(v, "glibc"):
	case v == "" || strings.EqualFold(v, "diad"):
		mallocErr = SetMalloc(TensorMalloc)
	default:
		mallocErr = fmt.Errorf("torchrt: %s=%q: want diad or glibc", MallocEnv, v)
	}
}
