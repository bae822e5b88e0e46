#include "test_params.h"

namespace cab_it {

cab::v1::MaskPolicy WirePolicy(cab::MaskPolicy p) {
  switch (p) {
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

std::vector<cab::MaskPolicy> AllMaskPolicies() {
  return {cab::MaskPolicy::kCab,   cab::MaskPolicy::kMagnitude, cab::MaskPolicy::kRandom, cab::MaskPolicy::kStreaming,
          cab::MaskPolicy::kQuest, cab::MaskPolicy::kDense,     cab::MaskPolicy::kAdaptive};
}

std::vector<cab::v1::MaskFormat> AllMaskFormats() {
  return {cab::v1::MASK_FORMAT_BSR, cab::v1::MASK_FORMAT_BITMAP, cab::v1::MASK_FORMAT_FLEX};
}

cab::v1::MaskParams ToWire(const TestMaskParams& p) {
  cab::v1::MaskParams w;
  w.set_policy(WirePolicy(p.policy));
  w.set_estimator(p.estimator == cab::Estimator::kMaxL2  ? cab::v1::ESTIMATOR_MAX_L2
                  : p.estimator == cab::Estimator::kMean ? cab::v1::ESTIMATOR_MEAN
                                                         : cab::v1::ESTIMATOR_QUEST);
  w.set_curvature(p.curvature == cab::CurvatureKind::kBalanced ? cab::v1::CURVATURE_BALANCED
                  : p.curvature == cab::CurvatureKind::kForman ? cab::v1::CURVATURE_FORMAN
                                                               : cab::v1::CURVATURE_DIRECT_REDUNDANCY);
  w.set_query_coarsening(p.query_coarsening == cab::Coarsening::kMaxL2 ? cab::v1::COARSENING_MAX_L2
                                                                       : cab::v1::COARSENING_MEAN);
  w.set_sparsity(p.sparsity);
  w.set_blocks_per_row(p.blocks_per_row);
  w.set_graph_degree(p.graph_degree);
  w.set_causal(p.causal);
  w.set_seed(p.seed);
  if (p.min_keep) w.set_min_keep(*p.min_keep);
  if (p.sink_blocks) w.set_sink_blocks(*p.sink_blocks);
  if (p.local_blocks) w.set_local_blocks(*p.local_blocks);
  if (p.local_ratio) w.set_local_ratio(*p.local_ratio);
  if (p.bridge_ratio) w.set_bridge_ratio(*p.bridge_ratio);
  if (p.importance_ratio) w.set_importance_ratio(*p.importance_ratio);
  if (p.lambda) w.set_lambda(*p.lambda);
  if (p.adaptive_tau) w.set_adaptive_tau(*p.adaptive_tau);
  if (p.adaptive_z) w.set_adaptive_z(*p.adaptive_z);
  return w;
}

cab::MaskParams ToCab(const TestMaskParams& p) {
  cab::MaskParams c;
  c.policy = p.policy;
  c.graph.estimator = p.estimator;
  c.graph.curvature = p.curvature;
  c.graph.degree = p.graph_degree;
  c.graph.causal = p.causal;
  c.query_coarsening = p.query_coarsening;
  c.sparsity = p.sparsity;
  c.blocks_per_row = p.blocks_per_row;
  c.seed = p.seed;
  c.row_begin = p.row_begin;
  c.row_end = p.row_end == 0 ? -1 : p.row_end;
  if (p.min_keep) c.min_keep = *p.min_keep;
  if (p.sink_blocks) c.sink_blocks = *p.sink_blocks;
  if (p.local_blocks) c.local_blocks = *p.local_blocks;
  if (p.local_ratio) c.local_ratio = *p.local_ratio;
  if (p.bridge_ratio) c.bridge_ratio = *p.bridge_ratio;
  if (p.importance_ratio) c.importance_ratio = *p.importance_ratio;
  if (p.lambda) c.graph.lambda = *p.lambda;
  if (p.adaptive_tau) c.adaptive_tau = *p.adaptive_tau;
  if (p.adaptive_z) c.adaptive_z = *p.adaptive_z;
  return c;
}

std::vector<cab::EvictPolicy> AllEvictPolicies() {
  return {cab::EvictPolicy::kH2O, cab::EvictPolicy::kStreaming, cab::EvictPolicy::kCab, cab::EvictPolicy::kSnapKV,
          cab::EvictPolicy::kRandom};
}

void FillWire(const TestEvictParams& p, cab::v1::EvictRequest* req) {
  switch (p.policy) {
    case cab::EvictPolicy::kH2O: req->set_policy(cab::v1::EVICT_POLICY_H2O); break;
    case cab::EvictPolicy::kStreaming: req->set_policy(cab::v1::EVICT_POLICY_STREAMING); break;
    case cab::EvictPolicy::kCab: req->set_policy(cab::v1::EVICT_POLICY_CAB); break;
    case cab::EvictPolicy::kSnapKV: req->set_policy(cab::v1::EVICT_POLICY_SNAPKV); break;
    case cab::EvictPolicy::kRandom: req->set_policy(cab::v1::EVICT_POLICY_RANDOM); break;
  }
  req->set_keep(p.keep);
  req->set_block_size(p.block_size);
  req->set_graph_degree(p.graph_degree);
  req->set_seed(p.seed);
  req->set_curvature(p.curvature == cab::CurvatureKind::kBalanced ? cab::v1::CURVATURE_BALANCED
                     : p.curvature == cab::CurvatureKind::kForman ? cab::v1::CURVATURE_FORMAN
                                                                  : cab::v1::CURVATURE_DIRECT_REDUNDANCY);
  if (p.sink_tokens) req->set_sink_tokens(*p.sink_tokens);
  if (p.snapkv_pool) req->set_snapkv_pool(*p.snapkv_pool);
  if (p.local_ratio) req->set_local_ratio(*p.local_ratio);
  if (p.bridge_ratio) req->set_bridge_ratio(*p.bridge_ratio);
  if (p.importance_ratio) req->set_importance_ratio(*p.importance_ratio);
}

cab::EvictParams ToCab(const TestEvictParams& p) {
  cab::EvictParams c;
  c.policy = p.policy;
  c.keep = p.keep;
  c.block_size = p.block_size;
  c.graph.degree = p.graph_degree;
  c.seed = p.seed;
  c.graph.curvature = p.curvature;
  if (p.sink_tokens) c.sink_tokens = *p.sink_tokens;
  if (p.snapkv_pool) c.snapkv_pool = *p.snapkv_pool;
  // The wire has one local_ratio; h2o reads it as its own recent share (cab::EvictParams keeps two).
  if (p.local_ratio) c.local_ratio = c.h2o_local_ratio = *p.local_ratio;
  if (p.bridge_ratio) c.bridge_ratio = *p.bridge_ratio;
  if (p.importance_ratio) c.importance_ratio = *p.importance_ratio;
  return c;
}

}  // namespace cab_it
