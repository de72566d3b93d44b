package torchrt

/*
#cgo LDFLAGS: -ldl
#define _GNU_SOURCE
#include <dlfcn.h>
#include <stdlib.h>
#include "kernels.h"

// oneDNN's version as the loaded library reports it (dnnl_version(); the
// struct is dnnl_version_t's leading fields). Looked up at run time so that
// diad links no oneDNN of its own: libtorch loads whichever libdnnl the
// system resolves, and that is the one that computes.
typedef struct { int major, minor, patch; const char *hash; } diad_dnnl_version;
static int diad_onednn_version(int *major, int *minor, int *patch) {
	const diad_dnnl_version *(*f)(void) = (const diad_dnnl_version *(*)(void))dlsym(RTLD_DEFAULT, "dnnl_version");
	if (!f) return 0;
	const diad_dnnl_version *v = f();
	if (!v) return 0;
	*major = v->major; *minor = v->minor; *patch = v->patch;
	return 1;
}
static const char *diad_openblas_config(void) {
	char *(*f)(void) = (char *(*)(void))dlsym(RTLD_DEFAULT, "openblas_get_config");
	return f ? f() : 0;
}
static const char *diad_openblas_corename(void) {
	char *(*f)(void) = (char *(*)(void))dlsym(RTLD_DEFAULT, "openblas_get_corename");
	return f ? f() : 0;
}
*/
import "C"

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"unsafe"
)

// OneDNNAvailable reports whether this libtorch was built with oneDNN
// (MKL-DNN), the library its CPU convolutions use by default.
func OneDNNAvailable() bool { return C.diad_mkldnn_available() == 1 }

// OneDNNEnabled reports whether libtorch may use oneDNN kernels now
// (torch.backends.mkldnn.enabled).
func OneDNNEnabled() bool { return OneDNNAvailable() && C.diad_mkldnn_enabled() == 1 }

// SetOneDNNEnabled switches libtorch's oneDNN kernels on or off for the whole
// process (torch.backends.mkldnn.enabled). Off, convolutions run on ATen's
// own kernels: slower, and independent of the oneDNN library installed.
// Switch it only while no tensor work runs.
func SetOneDNNEnabled(on bool) {
	v := C.int(0)
	if on {
		v = 1
	}
	C.diad_mkldnn_set_enabled(v)
}

// OneDNNVersion is the version of the oneDNN library loaded into this
// process ("" when none is).
func OneDNNVersion() string {
	var major, minor, patch C.int
	if C.diad_onednn_version(&major, &minor, &patch) == 0 {
		return ""
	}
	return fmt.Sprintf("%d.%d.%d", int(major), int(minor), int(patch))
}

// OpenBLAS describes the OpenBLAS libtorch's matrix products call: its build
// configuration and the core type it chose ("" when the BLAS is not OpenBLAS).
func OpenBLAS() string {
	cfg := C.diad_openblas_config()
	if cfg == nil {
		return ""
	}
	s := strings.TrimSpace(C.GoString(cfg))
	if core := C.diad_openblas_corename(); core != nil {
		s += " (core " + C.GoString(core) + ")"
	}
	return s
}

// takeString converts a malloc'ed C string and frees it.
func takeString(p *C.char) string {
	if p == nil {
		return ""
	}
	defer C.free(unsafe.Pointer(p))
	return C.GoString(p)
}

// BuildConfig is libtorch's own report of how it was built
// (torch.__config__.show()): compiler, BLAS, oneDNN, OpenMP, CPU capability.
func BuildConfig() string { return strings.TrimSpace(takeString(C.diad_show_config())) }

// ParallelInfo is libtorch's report of its thread settings
// (torch.__config__.parallel_info()).
func ParallelInfo() string { return strings.TrimSpace(takeString(C.diad_parallel_info())) }

// CPUCapability is the instruction set ATen's own CPU kernels dispatch to on
// this machine (e.g. AVX512, AVX2, DEFAULT).
func CPUCapability() string { return takeString(C.diad_cpu_capability()) }

// LoadedLibrary is the file of the first shared library mapped into this
// process whose name starts with prefix (e.g. "libdnnl", "libopenblas"), as
// the dynamic linker resolved it; "" when none is.
func LoadedLibrary(prefix string) string {
	maps, err := os.ReadFile("/proc/self/maps")
	if err != nil {
		return ""
	}
	for _, line := range strings.Split(string(maps), "\n") {
		f := strings.Fields(line)
		if len(f) < 6 {
			continue
		}
		path := f[len(f)-1]
		if strings.HasPrefix(filepath.Base(path), prefix) && strings.Contains(filepath.Base(path), ".so") {
			return path
		}
	}
	return ""
}
