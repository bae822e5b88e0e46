// Info and Predict against a real cab-server on loopback: every policy, format and dtype, each answer
// checked against the CPU backend run in-process on the same input and against format invariants.
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

using PredictTest = ServerTest;

TEST_F(PredictTest, InfoDescribesTheCpuBackendAndEveryPolicy) {
  cab::v1::InfoResponse info;
  auto ctx = Context();
  const grpc::Status s = stub_->Info(ctx.get(), cab::v1::InfoRequest(), &info);
  ASSERT_TRUE(s.ok()) << Describe(s);
  EXPECT_FALSE(info.version().empty());
  EXPECT_EQ(info.backend(), "cpu");
  EXPECT_FALSE(info.auth_required());
  const std::set<std::string> masks(info.mask_policies().begin(), info.mask_policies().end());
  for (auto p : AllMaskPolicies()) EXPECT_TRUE(masks.count(cab::Name(p))) << "mask policy missing: " << cab::Name(p);
  const std::set<std::string> evicts(info.evict_policies().begin(), info.evict_policies().end());
  for (auto p : AllEvictPolicies()) EXPECT_TRUE(evicts.count(cab::Name(p))) << "evict policy missing: " << cab::Name(p);
  EXPECT_EQ(info.estimators_size(), 3);
  EXPECT_EQ(info.curvatures_size(), 3);
  EXPECT_EQ(info.formats_size(), 3);
  EXPECT_GT(info.limits().max_tokens(), 0);
  EXPECT_GT(info.limits().max_heads(), 0);
  EXPECT_GT(info.limits().max_head_dim(), 0);
  EXPECT_GT(info.limits().min_block_size(), 0);
  EXPECT_GE(info.limits().max_block_size(), info.limits().min_block_size());
}

// One policy over every format and dtype; the mask must equal the in-process reference exactly.
void CheckPolicy(cab::v1::MaskPredictor::Stub& stub, cab::MaskPolicy policy) {
  for (cab::DType dtype : {cab::DType::kF32, cab::DType::kF16, cab::DType::kBF16}) {
    ProblemShape shape;
    shape.dtype = dtype;
    shape.seed = 10 + static_cast<int>(dtype);
    const Problem pb = MakeProblem(shape);
    TestMaskParams p;
    p.policy = policy;
    auto want = ReferenceMask(pb, p);
    ASSERT_TRUE(want.ok()) << want.status();
    const DenseMask want_dense = FromCab(want->mask);
    for (cab::v1::MaskFormat format : AllMaskFormats()) {
      SCOPED_TRACE(cab::Name(policy) + " " + cab::DTypeName(dtype) + " " + cab::v1::MaskFormat_Name(format));
      cab::v1::PredictRequest req = FullRequest(pb, p, format);
      req.set_diagnostics(true);
      cab::v1::PredictResponse resp;
      auto ctx = Context();
      const grpc::Status s = stub.Predict(ctx.get(), req, &resp);
      ASSERT_TRUE(s.ok()) << Describe(s);
      EXPECT_EQ(resp.mask().format(), format);
      auto got = DecodeWireMask(resp.mask());
      ASSERT_TRUE(got.ok()) << got.status();
      EXPECT_EQ(MaskDiff(*got, want_dense), "");
      EXPECT_NEAR(resp.mask().density(), want->mask.Density(true), 1e-9);
      ASSERT_EQ(resp.diagnostics().heads_size(), shape.batch * shape.heads);
      for (int i = 0; i < resp.diagnostics().heads_size(); ++i) {
        const auto& g = resp.diagnostics().heads(i);
        const auto& w = want->diagnostics.heads[i];
        EXPECT_EQ(g.edges(), w.curvature.edges) << "head " << i;
        EXPECT_FLOAT_EQ(g.curvature_min(), w.curvature.min) << "head " << i;
        EXPECT_FLOAT_EQ(g.curvature_max(), w.curvature.max) << "head " << i;
        EXPECT_NEAR(g.density(), w.density, 1e-9) << "head " << i;
      }
      EXPECT_GT(resp.timings().total_seconds(), 0);
    }
  }
}

TEST_F(PredictTest, PredictCab) { CheckPolicy(*stub_, cab::MaskPolicy::kCab); }
TEST_F(PredictTest, PredictMagnitude) { CheckPolicy(*stub_, cab::MaskPolicy::kMagnitude); }
TEST_F(PredictTest, PredictRandom) { CheckPolicy(*stub_, cab::MaskPolicy::kRandom); }
TEST_F(PredictTest, PredictStreaming) { CheckPolicy(*stub_, cab::MaskPolicy::kStreaming); }
TEST_F(PredictTest, PredictQuest) { CheckPolicy(*stub_, cab::MaskPolicy::kQuest); }
TEST_F(PredictTest, PredictDense) { CheckPolicy(*stub_, cab::MaskPolicy::kDense); }
TEST_F(PredictTest, PredictAdaptive) { CheckPolicy(*stub_, cab::MaskPolicy::kAdaptive); }

// Properties every answer must have whatever the backend computes: causal, diagonal kept, the row
// budget of SPEC 3 met exactly by the fixed-budget policies.
TEST_F(PredictTest, PredictMasksAreCausalKeepTheDiagonalAndMeetTheRowBudget) {
  const Problem pb = MakeProblem(ProblemShape{});
  for (cab::MaskPolicy policy : AllMaskPolicies()) {
    SCOPED_TRACE(cab::Name(policy));
    TestMaskParams p;
    p.policy = policy;
    cab::v1::PredictResponse resp;
    auto ctx = Context();
    const grpc::Status s = stub_->Predict(ctx.get(), FullRequest(pb, p, cab::v1::MASK_FORMAT_BITMAP), &resp);
    ASSERT_TRUE(s.ok()) << Describe(s);
    auto m = DecodeWireMask(resp.mask());
    ASSERT_TRUE(m.ok()) << m.status();
    ASSERT_EQ(m->rows, pb.shape.blocks());
    ASSERT_EQ(m->cols, pb.shape.blocks());
    const bool fixed_budget = policy == cab::MaskPolicy::kCab || policy == cab::MaskPolicy::kMagnitude ||
                              policy == cab::MaskPolicy::kRandom || policy == cab::MaskPolicy::kQuest;
    for (int h = 0; h < m->heads; ++h) {
      for (int r = 0; r < m->rows; ++r) {
        const int i = m->row_begin + r;
        int kept = 0;
        for (int c = 0; c < m->cols; ++c) {
          if (!m->at(0, h, r, c)) continue;
          ++kept;
          EXPECT_LE(c, i) << "non-causal block kept: head " << h << " row " << i;
        }
        EXPECT_TRUE(m->at(0, h, r, i)) << "diagonal dropped: head " << h << " row " << i;
        if (fixed_budget) {
          EXPECT_EQ(kept, std::min(cab::RowBudget(ToCab(p), i), i + 1)) << "head " << h << " row " << i;
        }
        if (policy == cab::MaskPolicy::kDense) {
          EXPECT_EQ(kept, i + 1);
        }
      }
    }
  }
}

TEST_F(PredictTest, PredictRowRangeAndNonCausal) {
  const Problem pb = MakeProblem(ProblemShape{});
  for (bool causal : {true, false}) {
    TestMaskParams p;
    p.causal = causal;
    p.row_begin = 10;
    p.row_end = 20;
    auto want = ReferenceMask(pb, p);
    ASSERT_TRUE(want.ok()) << want.status();
    cab::v1::PredictResponse resp;
    auto ctx = Context();
    const grpc::Status s = stub_->Predict(ctx.get(), FullRequest(pb, p, cab::v1::MASK_FORMAT_FLEX), &resp);
    ASSERT_TRUE(s.ok()) << Describe(s);
    auto got = DecodeWireMask(resp.mask());
    ASSERT_TRUE(got.ok()) << got.status();
    EXPECT_EQ(got->row_begin, 10);
    EXPECT_EQ(got->rows, 10);
    EXPECT_EQ(MaskDiff(*got, FromCab(want->mask)), "") << "causal " << causal;
  }
}

TEST_F(PredictTest, EstimatorsAndCurvaturesReachTheBackend) {
  const Problem pb = MakeProblem(ProblemShape{});
  for (auto est : {cab::Estimator::kMaxL2, cab::Estimator::kMean, cab::Estimator::kQuest}) {
    for (auto curv : {cab::CurvatureKind::kBalanced, cab::CurvatureKind::kForman, cab::CurvatureKind::kDirectRedundancy}) {
      TestMaskParams p;
      p.estimator = est;
      p.curvature = curv;
      p.query_coarsening = est == cab::Estimator::kMean ? cab::Coarsening::kMean : cab::Coarsening::kMaxL2;
      SCOPED_TRACE(cab::Name(est) + " " + cab::Name(curv));
      auto want = ReferenceMask(pb, p);
      ASSERT_TRUE(want.ok()) << want.status();
      cab::v1::PredictResponse resp;
      auto ctx = Context();
      const grpc::Status s = stub_->Predict(ctx.get(), FullRequest(pb, p, cab::v1::MASK_FORMAT_BSR), &resp);
      ASSERT_TRUE(s.ok()) << Describe(s);
      auto got = DecodeWireMask(resp.mask());
      ASSERT_TRUE(got.ok()) << got.status();
      EXPECT_EQ(MaskDiff(*got, FromCab(want->mask)), "");
    }
  }
}

// Max-L2 representatives (and key min / max) computed by the client give the same mask as full Q/K.
TEST_F(PredictTest, RepresentativesEqualFullTensors) {
  for (cab::DType dtype : {cab::DType::kF32, cab::DType::kBF16}) {
    ProblemShape shape;
    shape.dtype = dtype;
    const Problem pb = MakeProblem(shape);
    for (cab::MaskPolicy policy : AllMaskPolicies()) {
      for (auto est : {cab::Estimator::kMaxL2, cab::Estimator::kQuest}) {
        SCOPED_TRACE(cab::Name(policy) + " " + cab::Name(est) + " " + cab::DTypeName(dtype));
        TestMaskParams p;
        p.policy = policy;
        p.estimator = est;
        cab::v1::PredictResponse full, reps;
        auto c1 = Context();
        grpc::Status s = stub_->Predict(c1.get(), FullRequest(pb, p, cab::v1::MASK_FORMAT_BSR), &full);
        ASSERT_TRUE(s.ok()) << Describe(s);
        auto c2 = Context();
        s = stub_->Predict(c2.get(), RepresentativesRequest(pb, p, cab::v1::MASK_FORMAT_BSR), &reps);
        ASSERT_TRUE(s.ok()) << Describe(s);
        auto a = DecodeWireMask(full.mask());
        auto b = DecodeWireMask(reps.mask());
        ASSERT_TRUE(a.ok() && b.ok());
        EXPECT_EQ(MaskDiff(*b, *a), "");
      }
    }
  }
}

}  // namespace
}  // namespace cab_it
