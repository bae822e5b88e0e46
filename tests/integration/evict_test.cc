// Evict against a real cab-server: every policy and every request field, each answer equal to the
// CPU backend run in-process on the same inputs.
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

using EvictTest = ServerTest;

// Eviction: every policy, exactly `keep` ascending indices per (batch, kv head), equal to the reference.
TEST_F(EvictTest, EvictEveryPolicyMatchesReference) {
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

// Eviction with scores per query head ([B, Hq, N]: averaged over each GQA group) and in half precision.
TEST_F(EvictTest, EvictWithQueryHeadScoresAndHalfPrecision) {
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

// Likewise for the eviction request's fields.
TEST_F(EvictTest, EveryEvictParameterReachesTheBackend) {
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
