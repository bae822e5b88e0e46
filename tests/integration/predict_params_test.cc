// Predict over shapes and parameters: batches, GQA groups, edge lengths and block sizes, and every
// MaskParams field, each answer equal to the in-process CPU reference.
#include <algorithm>
#include <cmath>
#include <cstring>
#include <functional>
#include <set>

#include "absl/strings/str_cat.h"
#include "gtest/gtest.h"
#include "mask_decode.h"
#include "problem.h"
#include "rpc_helpers.h"

namespace cab_it {
namespace {

using PredictParamsTest = ServerTest;

// Batches and GQA groups of every size: the (batch, head) order of the answer and the query-head
// to kv-head mapping (h / (Hq / Hkv)) must match the reference.
TEST_F(PredictParamsTest, BatchAndGroupedQueryShapes) {
  struct Shape {
    int batch, heads, kv_heads;
  };
  for (const Shape& sh : {Shape{2, 4, 2}, Shape{3, 2, 2}, Shape{2, 8, 1}, Shape{1, 6, 3}}) {
    ProblemShape shape;
    shape.batch = sh.batch;
    shape.heads = sh.heads;
    shape.kv_heads = sh.kv_heads;
    shape.tokens = 500;
    shape.seed = 40 + sh.batch * 10 + sh.heads;
    const Problem pb = MakeProblem(shape);
    for (cab::MaskPolicy policy : {cab::MaskPolicy::kCab, cab::MaskPolicy::kQuest}) {
      SCOPED_TRACE(absl::StrCat("B", sh.batch, " Hq", sh.heads, " Hkv", sh.kv_heads, " ", cab::Name(policy)));
      TestMaskParams p;
      p.policy = policy;
      auto want = ReferenceMask(pb, p);
      ASSERT_TRUE(want.ok()) << want.status();
      for (bool reps : {false, true}) {
        cab::v1::PredictRequest req = reps ? RepresentativesRequest(pb, p, cab::v1::MASK_FORMAT_FLEX)
                                           : FullRequest(pb, p, cab::v1::MASK_FORMAT_FLEX);
        req.set_diagnostics(true);
        cab::v1::PredictResponse resp;
        auto ctx = Context();
        const grpc::Status s = stub_->Predict(ctx.get(), req, &resp);
        ASSERT_TRUE(s.ok()) << Describe(s);
        EXPECT_EQ(resp.mask().batch(), sh.batch);
        EXPECT_EQ(resp.mask().heads(), sh.heads);
        auto got = DecodeWireMask(resp.mask());
        ASSERT_TRUE(got.ok()) << got.status();
        EXPECT_EQ(MaskDiff(*got, FromCab(want->mask)), "") << (reps ? "representatives" : "full tensors");
        EXPECT_EQ(resp.diagnostics().heads_size(), sh.batch * sh.heads);
        EXPECT_GT(resp.diagnostics().prediction_flops(), 0);
        EXPECT_NEAR(resp.diagnostics().density(), want->diagnostics.density, 1e-9);
      }
    }
  }
}

// Sequences of one block, of a partial block, of exactly whole blocks, and a block size that is not
// a power of two: every policy still equals the reference.
TEST_F(PredictParamsTest, EdgeLengthsAndBlockSizes) {
  struct Case {
    int64_t tokens;
    int block_size;
  };
  for (const Case& c : {Case{1, 16}, Case{16, 16}, Case{17, 16}, Case{100, 48}, Case{96, 48}, Case{1024, 1024}}) {
    ProblemShape shape;
    shape.tokens = c.tokens;
    shape.block_size = c.block_size;
    shape.seed = 300 + c.tokens;
    const Problem pb = MakeProblem(shape);
    for (cab::MaskPolicy policy : AllMaskPolicies()) {
      SCOPED_TRACE(absl::StrCat("N ", c.tokens, " block ", c.block_size, " ", cab::Name(policy)));
      TestMaskParams p;
      p.policy = policy;
      auto want = ReferenceMask(pb, p);
      ASSERT_TRUE(want.ok()) << want.status();
      cab::v1::PredictResponse resp;
      auto ctx = Context();
      const grpc::Status s = stub_->Predict(ctx.get(), FullRequest(pb, p, cab::v1::MASK_FORMAT_BITMAP), &resp);
      ASSERT_TRUE(s.ok()) << Describe(s);
      auto got = DecodeWireMask(resp.mask());
      ASSERT_TRUE(got.ok()) << got.status();
      EXPECT_EQ(got->cols, shape.blocks());
      EXPECT_EQ(MaskDiff(*got, FromCab(want->mask)), "");
    }
  }
}

// Every MaskParams field set to a non-default value on the wire reaches the backend: the server's mask
// equals the reference with the same value, and (so that the case means something) that reference
// differs from the one with defaults.
TEST_F(PredictParamsTest, EveryMaskParameterReachesTheBackend) {
  ProblemShape shape;
  shape.tokens = 2000;
  shape.block_size = 16;
  const Problem pb = MakeProblem(shape);
  struct Variant {
    const char* name;
    cab::MaskPolicy policy;
    std::function<void(TestMaskParams&)> set;
  };
  using P = cab::MaskPolicy;
  const std::vector<Variant> variants = {
      {"sparsity", P::kCab, [](auto& p) { p.sparsity = 0.5f; }},
      {"blocks_per_row", P::kMagnitude, [](auto& p) { p.blocks_per_row = 3; }},
      {"min_keep", P::kMagnitude, [](auto& p) { p.min_keep = 12; }},
      {"sink_blocks", P::kStreaming, [](auto& p) { p.sink_blocks = 4; }},
      {"local_blocks", P::kCab, [](auto& p) { p.local_blocks = 5; }},
      {"cab shares", P::kCab, [](auto& p) {
         p.local_ratio = 0.1f;
         p.bridge_ratio = 0.6f;
         p.importance_ratio = 0.3f;
       }},
      {"graph_degree", P::kCab, [](auto& p) { p.graph_degree = 12; }},
      {"curvature forman", P::kCab, [](auto& p) { p.curvature = cab::CurvatureKind::kForman; }},
      {"lambda", P::kCab, [](auto& p) {
         p.curvature = cab::CurvatureKind::kDirectRedundancy;
         p.lambda = 0.01f;
       }},
      {"estimator mean", P::kMagnitude, [](auto& p) { p.estimator = cab::Estimator::kMean; }},
      {"query_coarsening mean", P::kMagnitude, [](auto& p) { p.query_coarsening = cab::Coarsening::kMean; }},
      {"seed", P::kRandom, [](auto& p) { p.seed = 12345; }},
      {"adaptive_tau", P::kAdaptive, [](auto& p) { p.adaptive_tau = 0.5f; }},
      {"adaptive_z", P::kAdaptive, [](auto& p) { p.adaptive_z = -1.0f; }},
      {"causal false", P::kMagnitude, [](auto& p) { p.causal = false; }},
  };
  for (const Variant& v : variants) {
    SCOPED_TRACE(v.name);
    TestMaskParams base;
    base.policy = v.policy;
    TestMaskParams p = base;
    v.set(p);
    auto want_base = ReferenceMask(pb, base);
    auto want = ReferenceMask(pb, p);
    ASSERT_TRUE(want_base.ok() && want.ok()) << want.status();
    const DenseMask want_dense = FromCab(want->mask);
    ASSERT_NE(MaskDiff(want_dense, FromCab(want_base->mask)), "") << "the test input does not exercise this field";
    cab::v1::PredictResponse resp;
    auto ctx = Context();
    const grpc::Status s = stub_->Predict(ctx.get(), FullRequest(pb, p, cab::v1::MASK_FORMAT_BSR), &resp);
    ASSERT_TRUE(s.ok()) << Describe(s);
    auto got = DecodeWireMask(resp.mask());
    ASSERT_TRUE(got.ok()) << got.status();
    EXPECT_EQ(MaskDiff(*got, want_dense), "");
  }
}

}  // namespace
}  // namespace cab_it
