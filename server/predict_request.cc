#include "predict_request.h"

#include "absl/strings/str_cat.h"
#include "limits_check.h"
#include "wire/mask_codec.h"
#include "wire/params_codec.h"
#include "wire/tensor_codec.h"

namespace cab::server {
namespace {

absl::Status Mismatch(const std::string& field, int64_t got, const std::string& what, int64_t want) {
  return absl::InvalidArgumentError(absl::StrCat(field, ": ", got, " differs from ", what, " ", want));
}

// k [B, Hkv, X, D] against q [B, Hq, X, D]: same batch, length and dim; Hq a multiple of Hkv.
absl::Status CheckPair(const cab::TensorView& q, const cab::TensorView& k, const char* qn, const char* kn) {
  const std::string kf(kn);
  if (k.shape[0] != q.shape[0]) return Mismatch(kf + ".shape[0]", k.shape[0], absl::StrCat(qn, " batch"), q.shape[0]);
  if (k.shape[2] != q.shape[2]) return Mismatch(kf + ".shape[2]", k.shape[2], absl::StrCat(qn, " length"), q.shape[2]);
  if (k.shape[3] != q.shape[3]) return Mismatch(kf + ".shape[3]", k.shape[3], absl::StrCat(qn, " head_dim"), q.shape[3]);
  if (q.shape[1] % k.shape[1] != 0) {
    return absl::InvalidArgumentError(absl::StrCat(kf, ".shape[1]: ", qn, " heads ", q.shape[1],
                                                   " must be a multiple of kv heads ", k.shape[1]));
  }
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<PredictInputs> DecodePredictRequest(const cab::v1::PredictRequest& r, const Limits& limits) {
  PredictInputs in;
  if (auto s = wire::CheckBlockSize(r.block_size(), "block_size"); !s.ok()) return s;
  in.block_size = r.block_size();
  auto format = wire::ResolveFormat(r.format(), "format");
  if (!format.ok()) return format.status();
  in.format = *format;
  in.diagnostics = r.diagnostics();
  auto params = wire::ToMaskParams(r.params(), "params");
  if (!params.ok()) return params.status();
  in.params = *params;

  const bool full = wire::IsPresent(r.q()) || wire::IsPresent(r.k());
  const bool reps = wire::IsPresent(r.q_rep()) || wire::IsPresent(r.k_rep());
  if (full && reps) {
    return absl::InvalidArgumentError("q_rep: send either q and k (full tensors) or q_rep and k_rep, not both");
  }
  if (!full && !reps) return absl::InvalidArgumentError("q: missing (send q and k, or q_rep and k_rep)");
  in.representatives = reps;
  const char* qn = reps ? "q_rep" : "q";
  const char* kn = reps ? "k_rep" : "k";
  auto q = wire::ViewTensor(reps ? r.q_rep() : r.q(), 4, qn);
  if (!q.ok()) return q.status();
  auto k = wire::ViewTensor(reps ? r.k_rep() : r.k(), 4, kn);
  if (!k.ok()) return k.status();
  if (auto s = CheckPair(*q, *k, qn, kn); !s.ok()) return s;
  in.q = *q;
  in.k = *k;

  if (reps) {
    if (r.tokens() < 1) return absl::InvalidArgumentError(absl::StrCat("tokens: ", r.tokens(), " must be >= 1 with q_rep/k_rep"));
    in.tokens = r.tokens();
    const int64_t m = CeilDiv(in.tokens, in.block_size);
    if (q->shape[2] != m) {
      return absl::InvalidArgumentError(absl::StrCat("q_rep.shape[2]: ", q->shape[2], " blocks, but tokens ", in.tokens,
                                                     " at block_size ", in.block_size, " make ", m));
    }
    const bool has_min = wire::IsPresent(r.k_min()), has_max = wire::IsPresent(r.k_max());
    if (has_min != has_max) {
      return absl::InvalidArgumentError(has_min ? "k_max: missing (k_min was given)" : "k_min: missing (k_max was given)");
    }
    if (has_min) {
      for (auto [t, name, slot] : {std::tuple{&r.k_min(), "k_min", &in.k_min}, {&r.k_max(), "k_max", &in.k_max}}) {
        auto v = wire::ViewTensor(*t, 4, name);
        if (!v.ok()) return v.status();
        if (v->shape != k->shape) {
          return absl::InvalidArgumentError(absl::StrCat(name, ".shape: must equal k_rep.shape"));
        }
        *slot = *v;
      }
    }
  } else {
    if (r.tokens() != 0 && r.tokens() != q->shape[2]) {
      return absl::InvalidArgumentError(absl::StrCat("tokens: ", r.tokens(), " differs from q.shape[2] ", q->shape[2],
                                                     " (leave it 0 with full tensors)"));
    }
    if (wire::IsPresent(r.k_min()) || wire::IsPresent(r.k_max())) {
      return absl::InvalidArgumentError("k_min: only with q_rep/k_rep (full keys give their own min/max)");
    }
    in.tokens = q->shape[2];
  }
  SequenceShape shape{q->shape[0], q->shape[1], in.tokens, q->shape[3], in.block_size};
  if (auto s = CheckSequenceLimits(shape, limits, absl::StrCat(qn, ".shape")); !s.ok()) return s;
  in.blocks = static_cast<int>(CeilDiv(in.tokens, in.block_size));
  if (auto s = wire::ApplyRows(r.row_begin(), r.row_end(), in.blocks, "", &in.params); !s.ok()) return s;
  return in;
}

}  // namespace cab::server
