// cab_wire parameter codec: unset fields take cab's defaults, explicit values (zero included)
// come through, and invalid values are INVALID_ARGUMENT naming the field as the client wrote it.
#include <cmath>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "wire/params_codec.h"

namespace cab::wire {
namespace {

using ::testing::HasSubstr;

void ExpectSameParams(const cab::MaskParams& a, const cab::MaskParams& b) {
  EXPECT_EQ(a.policy, b.policy);
  EXPECT_EQ(a.graph.estimator, b.graph.estimator);
  EXPECT_EQ(a.graph.causal, b.graph.causal);
  EXPECT_EQ(a.graph.degree, b.graph.degree);
  EXPECT_EQ(a.graph.curvature, b.graph.curvature);
  EXPECT_EQ(a.graph.lambda, b.graph.lambda);
  EXPECT_EQ(a.query_coarsening, b.query_coarsening);
  EXPECT_EQ(a.sparsity, b.sparsity);
  EXPECT_EQ(a.blocks_per_row, b.blocks_per_row);
  EXPECT_EQ(a.min_keep, b.min_keep);
  EXPECT_EQ(a.sink_blocks, b.sink_blocks);
  EXPECT_EQ(a.local_blocks, b.local_blocks);
  EXPECT_EQ(a.local_ratio, b.local_ratio);
  EXPECT_EQ(a.bridge_ratio, b.bridge_ratio);
  EXPECT_EQ(a.importance_ratio, b.importance_ratio);
  EXPECT_EQ(a.seed, b.seed);
  EXPECT_EQ(a.adaptive_tau, b.adaptive_tau);
  EXPECT_EQ(a.adaptive_z, b.adaptive_z);
}

TEST(WireParams, UnsetFieldsTakeTheDefaults) {
  auto p = ToMaskParams(cab::v1::MaskParams{});
  ASSERT_TRUE(p.ok()) << p.status();
  ExpectSameParams(*p, cab::MaskParams{});
}

TEST(WireParams, ExplicitValuesIncludingZeroComeThrough) {
  cab::v1::MaskParams w;
  w.set_policy(cab::v1::MASK_POLICY_STREAMING);
  w.set_sparsity(0.0f);
  w.set_sink_blocks(0);
  w.set_local_blocks(0);
  w.set_causal(false);
  w.set_graph_degree(5);
  w.set_estimator(cab::v1::ESTIMATOR_QUEST);
  w.set_curvature(cab::v1::CURVATURE_FORMAN);
  w.set_query_coarsening(cab::v1::COARSENING_MEAN);
  auto p = ToMaskParams(w);
  ASSERT_TRUE(p.ok()) << p.status();
  EXPECT_EQ(p->policy, cab::MaskPolicy::kStreaming);
  EXPECT_EQ(p->sparsity, 0.0f);
  EXPECT_EQ(p->sink_blocks, 0);
  EXPECT_EQ(p->local_blocks, 0);
  EXPECT_FALSE(p->graph.causal);
  EXPECT_EQ(p->graph.degree, 5);
  EXPECT_EQ(p->graph.estimator, cab::Estimator::kQuest);
  EXPECT_EQ(p->graph.curvature, cab::CurvatureKind::kForman);
  EXPECT_EQ(p->query_coarsening, cab::Coarsening::kMean);
}

TEST(WireParams, FromMaskParamsRoundTrips) {
  cab::MaskParams p;
  p.policy = cab::MaskPolicy::kAdaptive;
  p.graph.estimator = cab::Estimator::kMean;
  p.graph.causal = false;
  p.graph.degree = 7;
  p.graph.curvature = cab::CurvatureKind::kDirectRedundancy;
  p.graph.lambda = 0.25f;
  p.query_coarsening = cab::Coarsening::kMean;
  p.sparsity = 0.5f;
  p.blocks_per_row = 3;
  p.min_keep = 2;
  p.sink_blocks = 0;
  p.local_blocks = 4;
  p.seed = 99;
  p.adaptive_tau = 0.8f;
  p.adaptive_z = -0.5f;
  cab::v1::MaskParams w;
  FromMaskParams(p, &w);
  auto back = ToMaskParams(w);
  ASSERT_TRUE(back.ok()) << back.status();
  ExpectSameParams(*back, p);
}

TEST(WireParams, InvalidValuesNameTheField) {
  struct Case {
    std::function<void(cab::v1::MaskParams*)> set;
    const char* field;
  };
  const std::vector<Case> cases = {
      {[](auto* w) { w->set_sparsity(1.0f); }, "config.params.sparsity"},
      {[](auto* w) { w->set_sparsity(std::nanf("")); }, "config.params.sparsity"},
      {[](auto* w) { w->set_min_keep(0); }, "config.params.min_keep"},
      {[](auto* w) { w->set_graph_degree(0); }, "config.params.graph_degree"},
      {[](auto* w) { w->set_local_ratio(0.9f); }, "config.params.local_ratio"},
      {[](auto* w) { w->set_policy(static_cast<cab::v1::MaskPolicy>(77)); }, "config.params.policy"},
      {[](auto* w) { w->set_estimator(static_cast<cab::v1::Estimator>(77)); }, "config.params.estimator"},
      {[](auto* w) { w->set_curvature(static_cast<cab::v1::Curvature>(77)); }, "config.params.curvature"},
      {[](auto* w) { w->set_blocks_per_row(-1); }, "config.params.blocks_per_row"},
  };
  for (const Case& c : cases) {
    cab::v1::MaskParams w;
    c.set(&w);
    auto p = ToMaskParams(w, "config.params");
    EXPECT_EQ(p.status().code(), absl::StatusCode::kInvalidArgument) << c.field;
    EXPECT_THAT(p.status().message(), HasSubstr(c.field));
  }
}

TEST(WireParams, EvictDefaultsAndTheSharedLocalRatio) {
  cab::v1::EvictRequest r;
  r.set_keep(10);
  auto p = ToEvictParams(r);
  ASSERT_TRUE(p.ok()) << p.status();
  const cab::EvictParams d;
  EXPECT_EQ(p->policy, cab::EvictPolicy::kCab);
  EXPECT_EQ(p->local_ratio, d.local_ratio);
  EXPECT_EQ(p->h2o_local_ratio, d.h2o_local_ratio);
  EXPECT_EQ(p->block_size, d.block_size);
  EXPECT_EQ(p->sink_tokens, d.sink_tokens);
  EXPECT_EQ(p->snapkv_pool, d.snapkv_pool);

  r.set_policy(cab::v1::EVICT_POLICY_H2O);
  r.set_local_ratio(0.4f);
  p = ToEvictParams(r);
  ASSERT_TRUE(p.ok());
  EXPECT_EQ(p->policy, cab::EvictPolicy::kH2O);
  EXPECT_EQ(p->h2o_local_ratio, 0.4f);

  r.set_keep(0);
  EXPECT_THAT(ToEvictParams(r).status().message(), HasSubstr("keep"));
  r.set_keep(5);
  r.set_snapkv_pool(4);
  EXPECT_THAT(ToEvictParams(r).status().message(), HasSubstr("snapkv_pool"));
}

cab::v1::SessionConfig GoodConfig() {
  cab::v1::SessionConfig c;
  c.set_layers(2);
  c.set_heads(8);
  c.set_head_dim(64);
  c.set_block_size(64);
  return c;
}

TEST(WireParams, SessionConfigDefaults) {
  auto s = ToSessionSpec(GoodConfig());
  ASSERT_TRUE(s.ok()) << s.status();
  EXPECT_EQ(s->kv_heads, 8);  // 0 means Hkv = Hq
  EXPECT_EQ(s->batch, 1);
  EXPECT_FALSE(s->dtype.has_value());
  EXPECT_EQ(s->format, cab::v1::MASK_FORMAT_BSR);
  ExpectSameParams(s->params, cab::MaskParams{});
}

TEST(WireParams, SessionConfigErrorsNameTheField) {
  struct Case {
    std::function<void(cab::v1::SessionConfig*)> set;
    const char* field;
  };
  const std::vector<Case> cases = {
      {[](auto* c) { c->set_layers(0); }, "config.layers"},
      {[](auto* c) { c->set_heads(0); }, "config.heads"},
      {[](auto* c) { c->set_kv_heads(3); }, "config.kv_heads"},
      {[](auto* c) { c->set_kv_heads(-1); }, "config.kv_heads"},
      {[](auto* c) { c->set_head_dim(0); }, "config.head_dim"},
      {[](auto* c) { c->set_block_size(8); }, "config.block_size"},
      {[](auto* c) { c->set_block_size(4096); }, "config.block_size"},
      {[](auto* c) { c->set_batch(-2); }, "config.batch"},
      {[](auto* c) { c->set_dtype(cab::v1::DTYPE_INT64); }, "config.dtype"},
      {[](auto* c) { c->set_format(static_cast<cab::v1::MaskFormat>(12)); }, "config.format"},
      {[](auto* c) { c->mutable_params()->set_sparsity(-0.5f); }, "config.params.sparsity"},
      {[](auto* c) { c->set_session_id(std::string(200, 'x')); }, "config.session_id"},
  };
  for (const Case& c : cases) {
    cab::v1::SessionConfig cfg = GoodConfig();
    c.set(&cfg);
    auto s = ToSessionSpec(cfg);
    EXPECT_EQ(s.status().code(), absl::StatusCode::kInvalidArgument) << c.field;
    EXPECT_THAT(s.status().message(), HasSubstr(c.field));
  }
}

TEST(WireParams, ApplyRows) {
  cab::MaskParams p;
  ASSERT_TRUE(ApplyRows(0, 0, 10, "", &p).ok());
  EXPECT_EQ(p.row_begin, 0);
  EXPECT_EQ(p.row_end, 10);
  ASSERT_TRUE(ApplyRows(3, 5, 10, "", &p).ok());
  EXPECT_EQ(p.row_begin, 3);
  EXPECT_EQ(p.row_end, 5);
  EXPECT_THAT(ApplyRows(10, 0, 10, "query.", &p).message(), HasSubstr("query.row_begin"));
  EXPECT_THAT(ApplyRows(-1, 0, 10, "query.", &p).message(), HasSubstr("query.row_begin"));
  EXPECT_THAT(ApplyRows(4, 4, 10, "", &p).message(), HasSubstr("row_end"));
  EXPECT_THAT(ApplyRows(4, 11, 10, "", &p).message(), HasSubstr("row_end"));
}

TEST(WireParams, NamesForInfo) {
  EXPECT_THAT(MaskPolicyNames(), ::testing::ElementsAre("cab", "magnitude", "random", "streaming", "quest", "dense",
                                                        "adaptive"));
  EXPECT_THAT(EvictPolicyNames(), ::testing::ElementsAre("h2o", "streaming", "cab", "snapkv", "random"));
  EXPECT_EQ(*ParseMaskFormat("flex"), cab::v1::MASK_FORMAT_FLEX);
  EXPECT_FALSE(ParseMaskFormat("csr").ok());
}

}  // namespace
}  // namespace cab::wire
