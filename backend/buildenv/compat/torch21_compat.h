// torch21_compat.h - force-included (g++ -include) when gotch v0.9.1, whose C++
// wrappers were generated for libtorch 2.1, is compiled against a newer libtorch.
//
// Declaring functions in namespace torch makes qualified lookup (torch::name)
// find them instead of the at:: ones that torch:: otherwise reaches through its
// using-directive, so gotch's generated code compiles unmodified:
// - three ATen functions changed their signatures after 2.1; the 2.1 signatures
//   are declared here and throw (diad never calls these ops);
// - scaled_dot_product_attention: gotch passes an undefined tensor for "no
//   mask", which libtorch >= 2.2 rejects; it is forwarded as std::nullopt.
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

inline at::Tensor scaled_dot_product_attention(const at::Tensor& query, const at::Tensor& key,
                                               const at::Tensor& value, const at::Tensor& attn_mask,
                                               double dropout_p, bool is_causal,
                                               c10::optional<double> scale) {
  c10::optional<at::Tensor> mask;
  if (attn_mask.defined()) mask = attn_mask;
  return at::scaled_dot_product_attention(query, key, value, mask, dropout_p, is_causal, scale);
}

}  // namespace torch
