package torchrt

/*
#cgo LDFLAGS: -ldl
#define _GNU_SOURCE
#include <dlfcn.h>
// Debian's libtorch calls whatever libblas.so.3 is installed; OpenBLAS starts
// one thread per core for every matrix product by default.
static int diad_openblas_set_threads(int n) {
	void (*set)(int) = (void (*)(int))dlsym(RTLD_DEFAULT, "openblas_set_num_threads");
	if (!set) return 0;
	set(n);
	return 1;
}
*/
import "C"

import (
	"os"
	"strconv"
)

// SetBLASThreads sets OpenBLAS's thread count when libtorch's BLAS is
// OpenBLAS, and reports whether it is.
func SetBLASThreads(n int) bool { return C.diad_openblas_set_threads(C.int(n)) == 1 }

// OpenBLAS's own threads compete with libtorch's intra-op threads for the same
// cores: with both at 2 on a 2-core machine the tiny model's training step ran
// 5x slower than with OpenBLAS at 1 (backend/model benchmarks). libtorch
// parallelises around BLAS calls itself, so BLAS runs single-threaded unless
// the user says otherwise.
func init() {
	if os.Getenv("OPENBLAS_NUM_THREADS") == "" {
		SetBLASThreads(1)
	}
}

// ResetBLASThreads sets OpenBLAS back to diad's choice after a
// SetBLASThreads: the user's OPENBLAS_NUM_THREADS, else one thread.
func ResetBLASThreads() {
	n, err := strconv.Atoi(os.Getenv("OPENBLAS_NUM_THREADS"))
	if err != nil || n < 1 {
		n = 1
	}
	SetBLASThreads(n)
}
