#include "wire/params_codec.h"

#include <cmath>

#include "absl/strings/str_cat.h"
#include "wire/mask_codec.h"
#include "wire/tensor_codec.h"

namespace cab::wire {
namespace {

absl::Status Unknown(absl::string_view field, int value) {
  return absl::InvalidArgumentError(absl::StrCat(field, ": unknown value ", value));
}

// cab's Validate names the bare field ("sparsity: ..."); prefix it with where it sits in the request.
absl::Status Prefixed(const absl::Status& s, absl::string_view prefix) {
  if (s.ok() || prefix.empty()) return s;
  return absl::Status(s.code(), absl::StrCat(prefix, ".", s.message()));
}

absl::Status CheckFinite(float v, absl::string_view field) {
  if (!std::isfinite(v)) return absl::InvalidArgumentError(absl::StrCat(field, ": must be finite"));
  return absl::OkStatus();
}

}  // namespace

absl::Status CheckBlockSize(int64_t block_size, absl::string_view field) {
  if (block_size < kMinBlockSize || block_size > kMaxBlockSize) {
    return absl::InvalidArgumentError(
        absl::StrCat(field, ": ", block_size, " is outside [", kMinBlockSize, ", ", kMaxBlockSize, "]"));
  }
  return absl::OkStatus();
}

absl::StatusOr<cab::MaskPolicy> FromProto(cab::v1::MaskPolicy v, absl::string_view field) {
  switch (v) {
    case cab::v1::MASK_POLICY_UNSPECIFIED:
    case cab::v1::MASK_POLICY_CAB: return cab::MaskPolicy::kCab;
    case cab::v1::MASK_POLICY_MAGNITUDE: return cab::MaskPolicy::kMagnitude;
    case cab::v1::MASK_POLICY_RANDOM: return cab::MaskPolicy::kRandom;
    case cab::v1::MASK_POLICY_STREAMING: return cab::MaskPolicy::kStreaming;
    case cab::v1::MASK_POLICY_QUEST: return cab::MaskPolicy::kQuest;
    case cab::v1::MASK_POLICY_DENSE: return cab::MaskPolicy::kDense;
    case cab::v1::MASK_POLICY_ADAPTIVE: return cab::MaskPolicy::kAdaptive;
    default: return Unknown(field, v);
  }
}
absl::StatusOr<cab::Estimator> FromProto(cab::v1::Estimator v, absl::string_view field) {
  switch (v) {
    case cab::v1::ESTIMATOR_UNSPECIFIED:
    case cab::v1::ESTIMATOR_MAX_L2: return cab::Estimator::kMaxL2;
    case cab::v1::ESTIMATOR_MEAN: return cab::Estimator::kMean;
    case cab::v1::ESTIMATOR_QUEST: return cab::Estimator::kQuest;
    default: return Unknown(field, v);
  }
}
absl::StatusOr<cab::CurvatureKind> FromProto(cab::v1::Curvature v, absl::string_view field) {
  switch (v) {
    case cab::v1::CURVATURE_UNSPECIFIED:
    case cab::v1::CURVATURE_BALANCED: return cab::CurvatureKind::kBalanced;
    case cab::v1::CURVATURE_FORMAN: return cab::CurvatureKind::kForman;
    case cab::v1::CURVATURE_DIRECT_REDUNDANCY: return cab::CurvatureKind::kDirectRedundancy;
    default: return Unknown(field, v);
  }
}
absl::StatusOr<cab::Coarsening> FromProto(cab::v1::Coarsening v, absl::string_view field) {
  switch (v) {
    case cab::v1::COARSENING_UNSPECIFIED:
    case cab::v1::COARSENING_MAX_L2: return cab::Coarsening::kMaxL2;
    case cab::v1::COARSENING_MEAN: return cab::Coarsening::kMean;
    default: return Unknown(field, v);
  }
}
absl::StatusOr<cab::EvictPolicy> FromProto(cab::v1::EvictPolicy v, absl::string_view field) {
  switch (v) {
    case cab::v1::EVICT_POLICY_UNSPECIFIED:
    case cab::v1::EVICT_POLICY_CAB: return cab::EvictPolicy::kCab;
    case cab::v1::EVICT_POLICY_H2O: return cab::EvictPolicy::kH2O;
    case cab::v1::EVICT_POLICY_STREAMING: return cab::EvictPolicy::kStreaming;
    case cab::v1::EVICT_POLICY_SNAPKV: return cab::EvictPolicy::kSnapKV;
    case cab::v1::EVICT_POLICY_RANDOM: return cab::EvictPolicy::kRandom;
    default: return Unknown(field, v);
  }
}

cab::v1::MaskPolicy ToProto(cab::MaskPolicy v) {
  switch (v) {
    case cab::MaskPolicy::kCab: return cab::v1::MASK_POLICY_CAB;
    case cab::MaskPolicy::kMagnitude: return cab::v1::MASK_POLICY_MAGNITUDE;
    case cab::MaskPolicy::kRandom: return cab::v1::MASK_POLICY_RANDOM;
    case cab::MaskPolicy::kStreaming: return cab::v1::MASK_POLICY_STREAMING;
    case cab::MaskPolicy::kQuest: return cab::v1::MASK_POLICY_QUEST;
    case cab::MaskPolicy::kDense: return cab::v1::MASK_POLICY_DENSE;
    case cab::MaskPolicy::kAdaptive: return cab::v1::MASK_POLICY_ADAPTIVE;
  }
  return cab::v1::MASK_POLICY_UNSPECIFIED;
}
cab::v1::Estimator ToProto(cab::Estimator v) {
  switch (v) {
    case cab::Estimator::kMaxL2: return cab::v1::ESTIMATOR_MAX_L2;
    case cab::Estimator::kMean: return cab::v1::ESTIMATOR_MEAN;
    case cab::Estimator::kQuest: return cab::v1::ESTIMATOR_QUEST;
  }
  return cab::v1::ESTIMATOR_UNSPECIFIED;
}
cab::v1::Curvature ToProto(cab::CurvatureKind v) {
  switch (v) {
    case cab::CurvatureKind::kBalanced: return cab::v1::CURVATURE_BALANCED;
    case cab::CurvatureKind::kForman: return cab::v1::CURVATURE_FORMAN;
    case cab::CurvatureKind::kDirectRedundancy: return cab::v1::CURVATURE_DIRECT_REDUNDANCY;
  }
  return cab::v1::CURVATURE_UNSPECIFIED;
}
cab::v1::Coarsening ToProto(cab::Coarsening v) {
  return v == cab::Coarsening::kMean ? cab::v1::COARSENING_MEAN : cab::v1::COARSENING_MAX_L2;
}
cab::v1::EvictPolicy ToProto(cab::EvictPolicy v) {
  switch (v) {
    case cab::EvictPolicy::kH2O: return cab::v1::EVICT_POLICY_H2O;
    case cab::EvictPolicy::kStreaming: return cab::v1::EVICT_POLICY_STREAMING;
    case cab::EvictPolicy::kCab: return cab::v1::EVICT_POLICY_CAB;
    case cab::EvictPolicy::kSnapKV: return cab::v1::EVICT_POLICY_SNAPKV;
    case cab::EvictPolicy::kRandom: return cab::v1::EVICT_POLICY_RANDOM;
  }
  return cab::v1::EVICT_POLICY_UNSPECIFIED;
}

absl::StatusOr<cab::v1::MaskFormat> ParseMaskFormat(const std::string& name) {
  if (name == "bsr") return cab::v1::MASK_FORMAT_BSR;
  if (name == "bitmap") return cab::v1::MASK_FORMAT_BITMAP;
  if (name == "flex") return cab::v1::MASK_FORMAT_FLEX;
  return absl::InvalidArgumentError(absl::StrCat("format: unknown value '", name, "' (one of: bsr, bitmap, flex)"));
}
std::string MaskFormatName(cab::v1::MaskFormat format) {
  switch (format) {
    case cab::v1::MASK_FORMAT_UNSPECIFIED:
    case cab::v1::MASK_FORMAT_BSR: return "bsr";
    case cab::v1::MASK_FORMAT_BITMAP: return "bitmap";
    case cab::v1::MASK_FORMAT_FLEX: return "flex";
    default: return "unknown";
  }
}

std::vector<std::string> MaskPolicyNames() {
  std::vector<std::string> out;
  for (int v = 1; v <= cab::v1::MaskPolicy_MAX; ++v) out.push_back(cab::Name(*FromProto(cab::v1::MaskPolicy(v), "")));
  return out;
}
std::vector<std::string> EvictPolicyNames() {
  std::vector<std::string> out;
  for (int v = 1; v <= cab::v1::EvictPolicy_MAX; ++v) out.push_back(cab::Name(*FromProto(cab::v1::EvictPolicy(v), "")));
  return out;
}
std::vector<std::string> EstimatorNames() {
  std::vector<std::string> out;
  for (int v = 1; v <= cab::v1::Estimator_MAX; ++v) out.push_back(cab::Name(*FromProto(cab::v1::Estimator(v), "")));
  return out;
}
std::vector<std::string> CurvatureNames() {
  std::vector<std::string> out;
  for (int v = 1; v <= cab::v1::Curvature_MAX; ++v) out.push_back(cab::Name(*FromProto(cab::v1::Curvature(v), "")));
  return out;
}
std::vector<std::string> MaskFormatNames() { return {"bsr", "bitmap", "flex"}; }

absl::StatusOr<cab::MaskParams> ToMaskParams(const cab::v1::MaskParams& p, absl::string_view field) {
  const std::string f(field);
  auto in = [&](const char* name) { return f.empty() ? std::string(name) : absl::StrCat(f, ".", name); };
  cab::MaskParams out;
  auto policy = FromProto(p.policy(), in("policy"));
  if (!policy.ok()) return policy.status();
  out.policy = *policy;
  auto estimator = FromProto(p.estimator(), in("estimator"));
  if (!estimator.ok()) return estimator.status();
  out.graph.estimator = *estimator;
  auto curvature = FromProto(p.curvature(), in("curvature"));
  if (!curvature.ok()) return curvature.status();
  out.graph.curvature = *curvature;
  auto coarsening = FromProto(p.query_coarsening(), in("query_coarsening"));
  if (!coarsening.ok()) return coarsening.status();
  out.query_coarsening = *coarsening;

  if (p.has_sparsity()) out.sparsity = p.sparsity();
  out.blocks_per_row = p.blocks_per_row();
  if (p.has_min_keep()) out.min_keep = p.min_keep();
  if (p.has_sink_blocks()) out.sink_blocks = p.sink_blocks();
  if (p.has_local_blocks()) out.local_blocks = p.local_blocks();
  if (p.has_local_ratio()) out.local_ratio = p.local_ratio();
  if (p.has_bridge_ratio()) out.bridge_ratio = p.bridge_ratio();
  if (p.has_importance_ratio()) out.importance_ratio = p.importance_ratio();
  if (p.has_graph_degree()) out.graph.degree = p.graph_degree();
  if (p.has_lambda()) out.graph.lambda = p.lambda();
  out.seed = p.seed();
  if (p.has_adaptive_tau()) out.adaptive_tau = p.adaptive_tau();
  if (p.has_adaptive_z()) out.adaptive_z = p.adaptive_z();
  if (p.has_causal()) out.graph.causal = p.causal();
  // NaN slips through range checks written as comparisons; reject it up front.
  for (auto [v, name] : {std::pair{out.sparsity, "sparsity"}, {out.local_ratio, "local_ratio"},
                         {out.bridge_ratio, "bridge_ratio"}, {out.importance_ratio, "importance_ratio"},
                         {out.graph.lambda, "lambda"}, {out.adaptive_tau, "adaptive_tau"},
                         {out.adaptive_z, "adaptive_z"}}) {
    if (auto s = CheckFinite(v, in(name)); !s.ok()) return s;
  }
  if (auto s = out.Validate(); !s.ok()) return Prefixed(s, f);
  return out;
}

void FromMaskParams(const cab::MaskParams& p, cab::v1::MaskParams* out) {
  out->Clear();
  out->set_policy(ToProto(p.policy));
  out->set_estimator(ToProto(p.graph.estimator));
  out->set_curvature(ToProto(p.graph.curvature));
  out->set_query_coarsening(ToProto(p.query_coarsening));
  out->set_sparsity(p.sparsity);
  out->set_blocks_per_row(p.blocks_per_row);
  out->set_min_keep(p.min_keep);
  out->set_sink_blocks(p.sink_blocks);
  out->set_local_blocks(p.local_blocks);
  out->set_local_ratio(p.local_ratio);
  out->set_bridge_ratio(p.bridge_ratio);
  out->set_importance_ratio(p.importance_ratio);
  out->set_graph_degree(p.graph.degree);
  out->set_lambda(p.graph.lambda);
  out->set_seed(p.seed);
  out->set_adaptive_tau(p.adaptive_tau);
  out->set_adaptive_z(p.adaptive_z);
  out->set_causal(p.graph.causal);
}

absl::StatusOr<cab::EvictParams> ToEvictParams(const cab::v1::EvictRequest& r) {
  cab::EvictParams out;
  auto policy = FromProto(r.policy(), "policy");
  if (!policy.ok()) return policy.status();
  out.policy = *policy;
  auto curvature = FromProto(r.curvature(), "curvature");
  if (!curvature.ok()) return curvature.status();
  out.graph.curvature = *curvature;
  out.keep = r.keep();
  if (r.has_sink_tokens()) out.sink_tokens = r.sink_tokens();
  // One wire field, two defaults: cab's recent share is 0.3, h2o's 0.2; an explicit value sets both.
  if (r.has_local_ratio()) out.local_ratio = out.h2o_local_ratio = r.local_ratio();
  if (r.has_bridge_ratio()) out.bridge_ratio = r.bridge_ratio();
  if (r.has_importance_ratio()) out.importance_ratio = r.importance_ratio();
  if (r.has_block_size()) out.block_size = r.block_size();
  if (r.has_graph_degree()) out.graph.degree = r.graph_degree();
  if (r.has_snapkv_pool()) out.snapkv_pool = r.snapkv_pool();
  out.seed = r.seed();
  for (auto [v, name] : {std::pair{out.local_ratio, "local_ratio"}, {out.bridge_ratio, "bridge_ratio"},
                         {out.importance_ratio, "importance_ratio"}}) {
    if (auto s = CheckFinite(v, name); !s.ok()) return s;
  }
  if (auto s = out.Validate(); !s.ok()) return s;
  return out;
}

void FromEvictParams(const cab::EvictParams& p, cab::v1::EvictRequest* out) {
  out->set_policy(ToProto(p.policy));
  out->set_keep(p.keep);
  out->set_sink_tokens(p.sink_tokens);
  out->set_local_ratio(p.policy == cab::EvictPolicy::kH2O ? p.h2o_local_ratio : p.local_ratio);
  out->set_bridge_ratio(p.bridge_ratio);
  out->set_importance_ratio(p.importance_ratio);
  out->set_block_size(p.block_size);
  out->set_graph_degree(p.graph.degree);
  out->set_curvature(ToProto(p.graph.curvature));
  out->set_seed(p.seed);
  out->set_snapkv_pool(p.snapkv_pool);
}

absl::StatusOr<SessionSpec> ToSessionSpec(const cab::v1::SessionConfig& c) {
  SessionSpec s;
  if (c.layers() < 1) {
    return absl::InvalidArgumentError(absl::StrCat("config.layers: ", c.layers(), " must be >= 1"));
  }
  if (c.heads() < 1) return absl::InvalidArgumentError(absl::StrCat("config.heads: ", c.heads(), " must be >= 1"));
  if (c.kv_heads() < 0) {
    return absl::InvalidArgumentError(absl::StrCat("config.kv_heads: ", c.kv_heads(), " must be >= 0"));
  }
  const int kv_heads = c.kv_heads() == 0 ? c.heads() : c.kv_heads();
  if (c.heads() % kv_heads != 0) {
    return absl::InvalidArgumentError(absl::StrCat("config.kv_heads: heads (", c.heads(),
                                                   ") must be a multiple of kv_heads (", kv_heads, ")"));
  }
  if (c.head_dim() < 1) {
    return absl::InvalidArgumentError(absl::StrCat("config.head_dim: ", c.head_dim(), " must be >= 1"));
  }
  if (auto st = CheckBlockSize(c.block_size(), "config.block_size"); !st.ok()) return st;
  if (c.batch() < 0) return absl::InvalidArgumentError(absl::StrCat("config.batch: ", c.batch(), " must be >= 0"));
  if (c.dtype() != cab::v1::DTYPE_UNSPECIFIED) {
    auto dtype = FromProtoDType(c.dtype(), "config.dtype");
    if (!dtype.ok()) return dtype.status();
    s.dtype = *dtype;
  }
  auto params = ToMaskParams(c.params(), "config.params");
  if (!params.ok()) return params.status();
  auto format = ResolveFormat(c.format(), "config.format");
  if (!format.ok()) return format.status();
  if (c.session_id().size() > 128) {
    return absl::InvalidArgumentError(absl::StrCat("config.session_id: ", c.session_id().size(),
                                                   " bytes, at most 128"));
  }
  s.layers = c.layers();
  s.heads = c.heads();
  s.kv_heads = kv_heads;
  s.head_dim = c.head_dim();
  s.block_size = c.block_size();
  s.batch = c.batch() == 0 ? 1 : c.batch();
  s.params = *params;
  s.format = *format;
  s.representatives = c.representatives();
  s.session_id = c.session_id();
  return s;
}

absl::Status ApplyRows(int64_t row_begin, int64_t row_end, int blocks, absl::string_view prefix, cab::MaskParams* p) {
  if (row_begin < 0 || row_begin >= blocks) {
    return absl::InvalidArgumentError(
        absl::StrCat(prefix, "row_begin: ", row_begin, " is outside [0, ", blocks, ") (blocks held)"));
  }
  const int64_t end = row_end == 0 ? blocks : row_end;
  if (end <= row_begin || end > blocks) {
    return absl::InvalidArgumentError(
        absl::StrCat(prefix, "row_end: ", row_end, " must be 0 or in (row_begin, ", blocks, "] (blocks held)"));
  }
  p->row_begin = static_cast<int>(row_begin);
  p->row_end = static_cast<int>(end);
  return absl::OkStatus();
}

}  // namespace cab::wire
