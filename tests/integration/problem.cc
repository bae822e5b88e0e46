#include "problem.h"

#include <mutex>

namespace cab_it {

Problem MakeProblem(const ProblemShape& s) {
  Problem pb;
  pb.shape = s;
  pb.q = RoundTrip(RandomTokens({s.batch, s.heads, s.tokens, s.head_dim}, s.seed * 2 + 1), s.dtype);
  pb.k = RoundTrip(RandomTokens({s.batch, s.kv_heads, s.tokens, s.head_dim}, s.seed * 2 + 2), s.dtype);
  return pb;
}

cab::v1::PredictRequest FullRequest(const Problem& pb, const TestMaskParams& p, cab::v1::MaskFormat format) {
  cab::v1::PredictRequest r;
  r.set_block_size(pb.shape.block_size);
  *r.mutable_params() = ToWire(p);
  r.set_format(format);
  *r.mutable_q() = ToWire(pb.q, pb.shape.dtype);
  *r.mutable_k() = ToWire(pb.k, pb.shape.dtype);
  r.set_row_begin(p.row_begin);
  r.set_row_end(p.row_end);
  return r;
}

cab::v1::PredictRequest RepresentativesRequest(const Problem& pb, const TestMaskParams& p, cab::v1::MaskFormat format) {
  cab::v1::PredictRequest r;
  r.set_block_size(pb.shape.block_size);
  *r.mutable_params() = ToWire(p);
  r.set_format(format);
  const NaiveReps q = NaiveRepresentatives(pb.q, pb.shape.block_size);
  const NaiveReps k = NaiveRepresentatives(pb.k, pb.shape.block_size);
  // Representatives are exact token vectors (and min / max exact channel values), so they survive
  // the dtype round trip unchanged.
  *r.mutable_q_rep() = ToWire(q.maxl2, pb.shape.dtype);
  *r.mutable_k_rep() = ToWire(k.maxl2, pb.shape.dtype);
  *r.mutable_k_min() = ToWire(k.kmin, pb.shape.dtype);
  *r.mutable_k_max() = ToWire(k.kmax, pb.shape.dtype);
  r.set_tokens(pb.shape.tokens);
  r.set_row_begin(p.row_begin);
  r.set_row_end(p.row_end);
  return r;
}

cab::Backend& CpuReference() {
  static std::once_flag once;
  static std::unique_ptr<cab::Backend> backend;
  std::call_once(once, [] { backend = cab::MakeCpuBackend(cab::CpuBackendOptions{1}); });
  return *backend;
}

absl::StatusOr<cab::MaskResult> ReferenceMask(const Problem& pb, const TestMaskParams& p, int64_t tokens) {
  const int64_t n = tokens > 0 ? tokens : pb.shape.tokens;
  const HostTensor q = n == pb.shape.tokens ? pb.q : SliceTokens(pb.q, 0, n);
  const HostTensor k = n == pb.shape.tokens ? pb.k : SliceTokens(pb.k, 0, n);
  auto qc = CpuReference().Coarsen(cab::TensorView{q.values.data(), cab::DType::kF32, q.shape}, pb.shape.block_size);
  if (!qc.ok()) return qc.status();
  auto kc = CpuReference().Coarsen(cab::TensorView{k.values.data(), cab::DType::kF32, k.shape}, pb.shape.block_size);
  if (!kc.ok()) return kc.status();
  return CpuReference().PredictMask(*qc, *kc, ToCab(p), /*diagnostics=*/true);
}

}  // namespace cab_it
