// torch21_compat.h - force-included (g++ -include) when gotch v0.9.1, whose C++
// wrappers were generated for libtorch 2.1, is compiled against a newer libtorch.
//
// Three ATen functions changed their signatures after 2.1. Declaring the 2.1
// signatures in namespace torch makes qualified lookup (torch::name) find these
// overloads instead of the at:: ones, so gotch's generated code compiles
// unmodified. diad never calls these ops; if anything does, it gets a clear error.
#pragma once
#include <ATen/ATen.h>
#include <stdexcept>
#include <tuple>

namespace torch {

[[noreturn]] inline void diad_compat_unavailable(const char* op) {
  throw std::runtime_error(std::string(op) +
                           " is not available in this libtorch through gotch v0.9.1 "
                           "(its signature changed after libtorch 2.1)");
}

inline at::Tensor _cslt_sparse_mm(const at::Tensor&, const at::Tensor&, const at::Tensor&, bool) {
  diad_compat_unavailable("_cslt_sparse_mm");
}

inline std::tuple<at::Tensor, at::Tensor> _scaled_mm(const at::Tensor&, const at::Tensor&,
                                                     const at::Tensor&, c10::optional<at::ScalarType>,
                                                     const at::Tensor&, const at::Tensor&,
                                                     const at::Tensor&) {
  diad_compat_unavailable("_scaled_mm");
}

inline std::tuple<at::Tensor, at::Tensor> _scaled_mm_out(at::Tensor&, at::Tensor&, const at::Tensor&,
                                                         const at::Tensor&, const at::Tensor&,
                                                         c10::optional<at::ScalarType>, const at::Tensor&,
                                                         const at::Tensor&, const at::Tensor&) {
  diad_compat_unavailable("_scaled_mm_out");
}

}  // namespace torch
