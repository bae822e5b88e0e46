#include "representatives.h"

#include <vector>

#include "wire/tensor_codec.h"

namespace cab::client_internal {

bool NeedsKeyBounds(const MaskParams& p) {
  return p.graph.estimator == Estimator::kQuest || p.policy == MaskPolicy::kQuest;
}

RepKind QueryRep(const MaskParams& p) {
  return p.query_coarsening == Coarsening::kMean ? RepKind::kMean : RepKind::kMaxL2;
}

RepKind KeyRep(const MaskParams& p) {
  return p.graph.estimator == Estimator::kMean ? RepKind::kMean : RepKind::kMaxL2;
}

void EncodeBlocks(const CoarseBlocks& s, RepKind kind, int block_begin, int block_end, DType dtype,
                  v1::Tensor* out) {
  const std::vector<float>& src = kind == RepKind::kMaxL2 ? s.maxl2
                                  : kind == RepKind::kMean ? s.mean
                                  : kind == RepKind::kMin  ? s.kmin
                                                           : s.kmax;
  const int m = block_end - block_begin;
  std::vector<float> slice(static_cast<size_t>(s.batch) * s.heads * m * s.dim);
  size_t o = 0;
  for (int b = 0; b < s.batch; ++b)
    for (int h = 0; h < s.heads; ++h)
      for (int j = block_begin; j < block_end; ++j, o += s.dim)
        std::copy_n(src.data() + s.Offset(b, h, j), s.dim, slice.data() + o);
  wire::EncodeFloat(dtype, {s.batch, s.heads, m, s.dim}, slice.data(), out);
}

}  // namespace cab::client_internal
