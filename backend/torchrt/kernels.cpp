// What libtorch's C++ API knows about its CPU kernels and gotch's C API does
// not expose: oneDNN's switch, and the build's own configuration report.
#include <ATen/Context.h>
#include <ATen/Parallel.h>
#include <ATen/Version.h>
#include <cstdlib>
#include <cstring>
#include <string>

#include "kernels.h"

static char *diad_copy_string(const std::string &s) {
	char *out = static_cast<char *>(std::malloc(s.size() + 1));
	if (out) std::memcpy(out, s.c_str(), s.size() + 1);
	return out;
}

extern "C" {

int diad_mkldnn_available(void) { return at::hasMKLDNN() ? 1 : 0; }

int diad_mkldnn_enabled(void) { return at::globalContext().userEnabledMkldnn() ? 1 : 0; }

void diad_mkldnn_set_enabled(int on) { at::globalContext().setUserEnabledMkldnn(on != 0); }

char *diad_show_config(void) {
	try {
		return diad_copy_string(at::show_config());
	} catch (...) {
		return nullptr;
	}
}

char *diad_parallel_info(void) {
	try {
		return diad_copy_string(at::get_parallel_info());
	} catch (...) {
		return nullptr;
	}
}

char *diad_cpu_capability(void) {
	try {
		return diad_copy_string(at::get_cpu_capability());
	} catch (...) {
		return nullptr;
	}
}

} // extern "C"
