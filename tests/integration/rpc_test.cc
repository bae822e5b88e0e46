// Every RPC of cab.v1.MaskPredictor against a real cab-server on loopback, each answer checked
// against the CPU backend run in-process on the same input (and against format invariants).
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

using RpcTest = ServerTest;

TEST_F(RpcTest, InfoDescribesTheCpuBackendAndEveryPolicy) {
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

TEST_F(RpcTest, PredictCab) { CheckPolicy(*stub_, cab::MaskPolicy::kCab); }
TEST_F(RpcTest, PredictMagnitude) { CheckPolicy(*stub_, cab::MaskPolicy::kMagnitude); }
TEST_F(RpcTest, PredictRandom) { CheckPolicy(*stub_, cab::MaskPolicy::kRandom); }
TEST_F(RpcTest, PredictStreaming) { CheckPolicy(*stub_, cab::MaskPolicy::kStreaming); }
TEST_F(RpcTest, PredictQuest) { CheckPolicy(*stub_, cab::MaskPolicy::kQuest); }
TEST_F(RpcTest, PredictDense) { CheckPolicy(*stub_, cab::MaskPolicy::kDense); }
TEST_F(RpcTest, PredictAdaptive) { CheckPolicy(*stub_, cab::MaskPolicy::kAdaptive); }

// Properties every answer must have whatever the backend computes: causal, diagonal kept, the row
// budget of SPEC 3 met exactly by the fixed-budget policies.
TEST_F(RpcTest, PredictMasksAreCausalKeepTheDiagonalAndMeetTheRowBudget) {
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

TEST_F(RpcTest, PredictRowRangeAndNonCausal) {
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

TEST_F(RpcTest, EstimatorsAndCurvaturesReachTheBackend) {
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
TEST_F(RpcTest, RepresentativesEqualFullTensors) {
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

// Eviction: every policy, exactly `keep` ascending indices per (batch, kv head), equal to the reference.
TEST_F(RpcTest, EvictEveryPolicyMatchesReference) {
  const int B = 1, Hq = 4, Hkv = 2, D = 16, W = 8;
  const int64_t N = 300;
  const HostTensor scores = RandomTokens({B, Hkv, N}, 5);
  HostTensor pos = scores;  // accumulated attention is non-negative
  for (float& v : pos.values) v = std::fabs(v);
  const HostTensor keys = RandomTokens({B, Hkv, N, D}, 6);
  const HostTensor window = RandomTokens({B, Hq, W, D}, 7);
  for (cab::EvictPolicy policy : AllEvictPolicies()) {
    for (int64_t keep : {int64_t{40}, N + 5}) {
      SCOPED_TRACE(cab::Name(policy) + " keep " + std::to_string(keep));
      TestEvictParams p;
      p.policy = policy;
      p.keep = keep;
      cab::v1::EvictRequest req;
      FillWire(p, &req);
      req.set_tokens(N);
      req.set_batch(B);
      req.set_kv_heads(Hkv);
      *req.mutable_scores() = ToWire(pos, cab::DType::kF32);
      *req.mutable_keys() = ToWire(keys, cab::DType::kF32);
      *req.mutable_window() = ToWire(window, cab::DType::kF32);
      cab::v1::EvictResponse resp;
      auto ctx = Context();
      const grpc::Status s = stub_->Evict(ctx.get(), req, &resp);
      ASSERT_TRUE(s.ok()) << Describe(s);

      const cab::TensorView sv = ViewOf(req.scores()), kv = ViewOf(req.keys()), wv = ViewOf(req.window());
      cab::EvictInputs in;
      in.tokens = N;
      in.batch = B;
      in.kv_heads = Hkv;
      in.scores = &sv;
      in.keys = &kv;
      in.window = &wv;
      auto want = CpuReference().Evict(in, ToCab(p));
      ASSERT_TRUE(want.ok()) << want.status();

      const int64_t per_head = std::min(keep, N);
      EXPECT_EQ(resp.batch(), B);
      EXPECT_EQ(resp.kv_heads(), Hkv);
      ASSERT_EQ(resp.per_head(), per_head);
      ASSERT_EQ(resp.indices().dtype(), cab::v1::DTYPE_INT64);
      ASSERT_EQ(std::vector<int64_t>(resp.indices().shape().begin(), resp.indices().shape().end()),
                (std::vector<int64_t>{B, Hkv, per_head}));
      ASSERT_EQ(resp.indices().data().size(), sizeof(int64_t) * B * Hkv * per_head);
      std::vector<int64_t> got(static_cast<size_t>(B * Hkv * per_head));
      std::memcpy(got.data(), resp.indices().data().data(), resp.indices().data().size());
      for (int h = 0; h < Hkv; ++h) {
        for (int64_t i = 0; i < per_head; ++i) {
          const int64_t v = got[h * per_head + i];
          EXPECT_GE(v, 0);
          EXPECT_LT(v, N);
          if (i > 0) {
            EXPECT_LT(got[h * per_head + i - 1], v) << "not strictly ascending, head " << h;
          }
        }
      }
      EXPECT_EQ(got, want->indices);
    }
  }
}

// Batches and GQA groups of every size: the (batch, head) order of the answer and the query-head
// to kv-head mapping (h / (Hq / Hkv)) must match the reference.
TEST_F(RpcTest, BatchAndGroupedQueryShapes) {
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

// Eviction with scores per query head ([B, Hq, N]: averaged over each GQA group) and in half precision.
TEST_F(RpcTest, EvictWithQueryHeadScoresAndHalfPrecision) {
  const int B = 2, Hq = 4, Hkv = 2;
  const int64_t N = 200;
  HostTensor scores = RandomTokens({B, Hq, N}, 21);
  for (float& v : scores.values) v = std::fabs(v);
  for (cab::DType dtype : {cab::DType::kF32, cab::DType::kF16, cab::DType::kBF16}) {
    for (cab::EvictPolicy policy : {cab::EvictPolicy::kH2O, cab::EvictPolicy::kCab}) {
      SCOPED_TRACE(cab::Name(policy) + " " + cab::DTypeName(dtype));
      TestEvictParams p;
      p.policy = policy;
      p.keep = 30;
      cab::v1::EvictRequest req;
      FillWire(p, &req);
      *req.mutable_scores() = ToWire(scores, dtype);
      const HostTensor keys = RandomTokens({B, Hkv, N, 16}, 22);
      *req.mutable_keys() = ToWire(keys, dtype);
      cab::v1::EvictResponse resp;
      auto ctx = Context();
      const grpc::Status s = stub_->Evict(ctx.get(), req, &resp);
      ASSERT_TRUE(s.ok()) << Describe(s);
      const cab::TensorView sv = ViewOf(req.scores()), kv = ViewOf(req.keys());
      cab::EvictInputs in;
      in.tokens = N;
      in.scores = &sv;
      in.keys = &kv;
      in.batch = B;
      in.kv_heads = Hkv;
      auto want = CpuReference().Evict(in, ToCab(p));
      ASSERT_TRUE(want.ok()) << want.status();
      EXPECT_EQ(resp.batch(), B);
      EXPECT_EQ(resp.kv_heads(), Hkv);
      ASSERT_EQ(resp.per_head(), 30);
      std::vector<int64_t> got(resp.indices().data().size() / sizeof(int64_t));
      std::memcpy(got.data(), resp.indices().data().data(), got.size() * sizeof(int64_t));
      EXPECT_EQ(got, want->indices);
    }
  }
}

// Sequences of one block, of a partial block, of exactly whole blocks, and a block size that is not
// a power of two: every policy still equals the reference.
TEST_F(RpcTest, EdgeLengthsAndBlockSizes) {
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
TEST_F(RpcTest, EveryMaskParameterReachesTheBackend) {
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

// Likewise for the eviction request's fields.
TEST_F(RpcTest, EveryEvictParameterReachesTheBackend) {
  const int B = 1, Hq = 2, Hkv = 2, D = 16, W = 8;
  const int64_t N = 400;
  HostTensor scores = RandomTokens({B, Hkv, N}, 31);
  for (float& v : scores.values) v = std::fabs(v);
  const HostTensor keys = RandomTokens({B, Hkv, N, D}, 32);
  const HostTensor window = RandomTokens({B, Hq, W, D}, 33);
  struct Variant {
    const char* name;
    cab::EvictPolicy policy;
    std::function<void(TestEvictParams&)> set;
  };
  using E = cab::EvictPolicy;
  const std::vector<Variant> variants = {
      {"sink_tokens", E::kStreaming, [](auto& p) { p.sink_tokens = 16; }},
      {"h2o local_ratio", E::kH2O, [](auto& p) { p.local_ratio = 0.6f; }},
      {"cab shares", E::kCab, [](auto& p) {
         p.local_ratio = 0.1f;
         p.bridge_ratio = 0.5f;
         p.importance_ratio = 0.4f;
       }},
      {"cab block_size", E::kCab, [](auto& p) { p.block_size = 32; }},
      {"cab graph_degree", E::kCab, [](auto& p) { p.graph_degree = 10; }},
      {"cab curvature", E::kCab, [](auto& p) { p.curvature = cab::CurvatureKind::kForman; }},
      {"snapkv_pool", E::kSnapKV, [](auto& p) { p.snapkv_pool = 1; }},
      {"random seed", E::kRandom, [](auto& p) { p.seed = 999; }},
  };
  auto run = [&](const TestEvictParams& p, std::vector<int64_t>* got, std::vector<int64_t>* want) {
    cab::v1::EvictRequest req;
    FillWire(p, &req);
    *req.mutable_scores() = ToWire(scores, cab::DType::kF32);
    *req.mutable_keys() = ToWire(keys, cab::DType::kF32);
    *req.mutable_window() = ToWire(window, cab::DType::kF32);
    cab::v1::EvictResponse resp;
    auto ctx = Context();
    const grpc::Status s = stub_->Evict(ctx.get(), req, &resp);
    ASSERT_TRUE(s.ok()) << Describe(s);
    got->resize(resp.indices().data().size() / sizeof(int64_t));
    std::memcpy(got->data(), resp.indices().data().data(), got->size() * sizeof(int64_t));
    const cab::TensorView sv = ViewOf(req.scores()), kv = ViewOf(req.keys()), wv = ViewOf(req.window());
    cab::EvictInputs in;
    in.tokens = N;
    in.scores = &sv;
    in.keys = &kv;
    in.window = &wv;
    in.batch = B;
    in.kv_heads = Hkv;
    auto w = CpuReference().Evict(in, ToCab(p));
    ASSERT_TRUE(w.ok()) << w.status();
    *want = w->indices;
  };
  for (const Variant& v : variants) {
    SCOPED_TRACE(v.name);
    TestEvictParams base;
    base.policy = v.policy;
    base.keep = 60;
    TestEvictParams p = base;
    v.set(p);
    std::vector<int64_t> got_base, want_base, got, want;
    run(base, &got_base, &want_base);
    run(p, &got, &want);
    ASSERT_NE(want, want_base) << "the test input does not exercise this field";
    EXPECT_EQ(got, want);
  }
}

}  // namespace
}  // namespace cab_it
