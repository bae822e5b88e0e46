// Every failure a caller can cause returns INVALID_ARGUMENT with a message naming the argument:
// bad shapes, dtypes, block sizes, sparsity out of range, ratios that do not sum to 1, keep = 0,
// inputs a policy needs but did not get. Nothing asserts or crashes.
#include <cmath>
#include <limits>
#include <string>

#include "cab/backend.h"
#include "gtest/gtest.h"
#include "policy_test_util.h"

namespace cab {
namespace {

using test::CoarsePair;
using test::RandomCoarsePair;

void ExpectInvalid(const absl::Status& s, const std::string& names, const std::string& what) {
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument) << what << ": " << s;
  EXPECT_NE(s.message().find(names), std::string::npos) << what << ": '" << s.message() << "' should name '" << names << "'";
}

class BadInput : public ::testing::Test {
 protected:
  std::unique_ptr<Backend> backend = MakeCpuBackend({2});
  CoarsePair in = RandomCoarsePair(*backend, 1, 4, 2, 8 * 10, 8, 8, 1);  // M = 10

  void ExpectMaskError(const MaskParams& p, const std::string& names, const std::string& what) {
    ExpectInvalid(backend->PredictMask(in.q, in.k, p, true).status(), names, what);
  }
};

TEST_F(BadInput, MaskParameters) {
  const float nan = std::numeric_limits<float>::quiet_NaN();
  for (float s : {1.f, 1.5f, -0.1f, nan}) {
    MaskParams p;
    p.sparsity = s;
    ExpectMaskError(p, "sparsity", "sparsity out of range");
  }
  {
    MaskParams p;
    p.local_ratio = 0.5f;  // 0.5 + 0.2 + 0.5
    ExpectMaskError(p, "local_ratio + bridge_ratio + importance_ratio", "ratios that do not sum to 1");
    p.local_ratio = 0.3f;
    p.bridge_ratio = -0.2f;
    ExpectMaskError(p, "bridge_ratio", "negative ratio");
  }
  auto with = [](auto set) {
    MaskParams p;
    set(p);
    return p;
  };
  ExpectMaskError(with([](MaskParams& p) { p.graph.degree = 0; }), "graph_degree", "degree 0");
  ExpectMaskError(with([](MaskParams& p) { p.blocks_per_row = -1; }), "blocks_per_row", "negative budget");
  ExpectMaskError(with([](MaskParams& p) { p.min_keep = 0; }), "min_keep", "min_keep 0");
  ExpectMaskError(with([](MaskParams& p) { p.sink_blocks = -1; }), "sink_blocks", "negative sinks");
  ExpectMaskError(with([](MaskParams& p) { p.local_blocks = -2; }), "local_blocks", "negative window");
  ExpectMaskError(with([](MaskParams& p) { p.policy = MaskPolicy::kAdaptive, p.adaptive_tau = 0; }), "adaptive_tau",
                  "tau 0");
  ExpectMaskError(with([](MaskParams& p) { p.policy = MaskPolicy::kAdaptive, p.adaptive_z = INFINITY; }), "adaptive_z",
                  "z inf");
  ExpectMaskError(with([](MaskParams& p) { p.row_begin = 10; }), "row_begin", "row_begin past the last block");
  ExpectMaskError(with([](MaskParams& p) { p.row_begin = -1; }), "row_begin", "negative row_begin");
  ExpectMaskError(with([](MaskParams& p) { p.row_end = 11; }), "row_end", "row_end past the blocks");
  ExpectMaskError(with([](MaskParams& p) { p.row_begin = 4, p.row_end = 4; }), "row_end", "empty row range");
  ExpectMaskError(with([](MaskParams& p) { p.policy = static_cast<MaskPolicy>(42); }), "policy", "unknown policy");
}

TEST_F(BadInput, CoarseInputs) {
  MaskParams p;
  CoarsePair bad = in;
  bad.k.dim = 4;
  ExpectInvalid(backend->PredictMask(bad.q, bad.k, p, false).status(), "dim", "k.dim differs");
  bad = in;
  bad.q.heads = 3;
  ExpectInvalid(backend->PredictMask(bad.q, bad.k, p, false).status(), "q", "q.heads not a multiple");
  bad = in;
  bad.q.maxl2.pop_back();
  ExpectInvalid(backend->PredictMask(bad.q, bad.k, p, false).status(), "q", "q.maxl2 short");
  ExpectInvalid(backend->PredictMask(CoarseBlocks{}, in.k, p, false).status(), "q", "empty q");
  CoarsePair other = RandomCoarsePair(*backend, 2, 4, 2, 8 * 10, 8, 8, 2);
  ExpectInvalid(backend->PredictMask(in.q, other.k, p, false).status(), "batch", "batch differs");
  other = RandomCoarsePair(*backend, 1, 4, 2, 8 * 12, 8, 8, 2);
  ExpectInvalid(backend->PredictMask(in.q, other.k, p, false).status(), "blocks", "blocks differ");

  // quest needs real key bounds; representatives sent without kmin/kmax have none.
  const test::OwnedTensor reps = test::RandomTensor({1, 2, 10, 8}, DType::kF32, 3);
  auto k_reps = CoarseFromRepresentatives(reps.view(), nullptr, nullptr, 8, 80);
  ASSERT_TRUE(k_reps.ok()) << k_reps.status();
  p.policy = MaskPolicy::kQuest;
  ExpectInvalid(backend->PredictMask(in.q, *k_reps, p, false).status(), "kmin", "quest without bounds");
  p.policy = MaskPolicy::kMagnitude;
  EXPECT_TRUE(backend->PredictMask(in.q, *k_reps, p, false).ok()) << "magnitude works on representatives";

  ExpectInvalid(backend->Graph(in.q, in.k, 1, 0, Coarsening::kMaxL2, GraphParams{}).status(), "batch", "b out of range");
  ExpectInvalid(backend->Graph(in.q, in.k, 0, 4, Coarsening::kMaxL2, GraphParams{}).status(), "head", "h out of range");
}

TEST_F(BadInput, Coarsening) {
  const test::OwnedTensor x = test::RandomTensor({1, 2, 20, 4}, DType::kF32, 5);
  TensorView v = x.view();
  ExpectInvalid(backend->Coarsen(v, 0).status(), "block_size", "block size 0");
  ExpectInvalid(backend->Coarsen(v, -3).status(), "block_size", "negative block size");
  TensorView rank3 = v;
  rank3.shape = {2, 20, 4};
  ExpectInvalid(backend->Coarsen(rank3, 8).status(), "x", "rank 3");
  TensorView zero = v;
  zero.shape = {1, 2, 0, 4};
  ExpectInvalid(backend->Coarsen(zero, 8).status(), "x", "no tokens");
  TensorView dtype = v;
  dtype.dtype = static_cast<DType>(9);
  ExpectInvalid(backend->Coarsen(dtype, 8).status(), "x", "unknown dtype");
}

TEST_F(BadInput, EvictionInputsAndParameters) {
  const test::OwnedTensor scores = test::RandomTensor({1, 4, 50}, DType::kF32, 6);
  const test::OwnedTensor keys = test::RandomTensor({1, 2, 50, 8}, DType::kF32, 7);
  const test::OwnedTensor window = test::RandomTensor({1, 4, 5, 8}, DType::kF32, 8);
  const TensorView sv = scores.view(), kv = keys.view(), wv = window.view();
  const EvictInputs all{50, &sv, &kv, &wv, 0, 0};
  auto params = [](EvictPolicy policy) {
    EvictParams p;
    p.policy = policy;
    p.keep = 10;
    return p;
  };
  auto expect = [&](const EvictInputs& in, const EvictParams& p, const std::string& names, const std::string& what) {
    ExpectInvalid(backend->Evict(in, p).status(), names, what);
  };

  EvictParams p = params(EvictPolicy::kH2O);
  p.keep = 0;
  expect(all, p, "keep", "keep = 0");
  expect(EvictInputs{50, nullptr, &kv, &wv, 0, 0}, params(EvictPolicy::kH2O), "scores", "h2o without scores");
  expect(EvictInputs{50, &sv, nullptr, &wv, 0, 0}, params(EvictPolicy::kCab), "keys", "cab without keys");
  expect(EvictInputs{50, &sv, nullptr, &wv, 0, 0}, params(EvictPolicy::kSnapKV), "keys", "snapkv without keys");
  expect(EvictInputs{50, &sv, &kv, nullptr, 0, 0}, params(EvictPolicy::kSnapKV), "window", "snapkv without window");
  expect(EvictInputs{0, nullptr, nullptr, nullptr, 1, 1}, params(EvictPolicy::kStreaming), "tokens", "no N");
  expect(EvictInputs{50, nullptr, nullptr, nullptr, 0, 1}, params(EvictPolicy::kRandom), "batch", "no batch");
  expect(EvictInputs{50, nullptr, nullptr, nullptr, 1, 0}, params(EvictPolicy::kRandom), "kv_heads", "no kv heads");
  expect(EvictInputs{-5, nullptr, nullptr, nullptr, 1, 1}, params(EvictPolicy::kRandom), "tokens", "negative N");
  expect(EvictInputs{49, &sv, &kv, &wv, 0, 0}, params(EvictPolicy::kH2O), "tokens", "tokens vs keys");

  TensorView s2 = sv;
  s2.shape = {4, 50};
  expect(EvictInputs{50, &s2, nullptr, nullptr, 0, 0}, params(EvictPolicy::kH2O), "scores", "scores rank 2");
  const test::OwnedTensor s3 = test::RandomTensor({1, 3, 50}, DType::kF32, 9);
  const TensorView s3v = s3.view();
  expect(EvictInputs{50, &s3v, &kv, nullptr, 0, 0}, params(EvictPolicy::kH2O), "scores", "3 score heads for 2 kv heads");
  const test::OwnedTensor s_short = test::RandomTensor({1, 2, 40}, DType::kF32, 10);
  const TensorView s_short_v = s_short.view();
  expect(EvictInputs{0, &s_short_v, &kv, nullptr, 0, 0}, params(EvictPolicy::kH2O), "scores", "scores shorter than keys");
  const test::OwnedTensor w_long = test::RandomTensor({1, 4, 60, 8}, DType::kF32, 11);
  const TensorView w_long_v = w_long.view();
  expect(EvictInputs{50, nullptr, &kv, &w_long_v, 0, 0}, params(EvictPolicy::kSnapKV), "window", "window > N");
  const test::OwnedTensor w_dim = test::RandomTensor({1, 4, 5, 4}, DType::kF32, 12);
  const TensorView w_dim_v = w_dim.view();
  expect(EvictInputs{50, nullptr, &kv, &w_dim_v, 0, 0}, params(EvictPolicy::kSnapKV), "window", "window head dim");
  TensorView k_dtype = kv;
  k_dtype.dtype = static_cast<DType>(5);
  expect(EvictInputs{50, nullptr, &k_dtype, nullptr, 0, 0}, params(EvictPolicy::kCab), "keys", "keys dtype");

  p = params(EvictPolicy::kCab);
  p.bridge_ratio = 0.4f;
  expect(all, p, "local_ratio + bridge_ratio + importance_ratio", "cab ratios do not sum to 1");
  p = params(EvictPolicy::kCab);
  p.block_size = 0;
  expect(all, p, "block_size", "block size 0");
  p = params(EvictPolicy::kSnapKV);
  p.snapkv_pool = 4;
  expect(all, p, "snapkv_pool", "even pool");
  p = params(EvictPolicy::kH2O);
  p.h2o_local_ratio = 1.5f;
  expect(all, p, "local_ratio", "h2o local ratio > 1");
  p = params(EvictPolicy::kCab);
  p.graph.degree = -1;
  expect(all, p, "graph_degree", "negative degree");
  p = params(EvictPolicy::kRandom);
  p.keep = int64_t{1} << 40;
  expect(EvictInputs{int64_t{1} << 41, nullptr, nullptr, nullptr, 4, 8}, p, "keep", "more indices than the cap");
  // cab's key-block graph is O(M^2): more key blocks than the backend's limit is refused, not allocated.
  const test::OwnedTensor long_keys = test::RandomTensor({1, 1, 16385, 1}, DType::kF32, 13);
  const TensorView long_keys_v = long_keys.view();
  p = params(EvictPolicy::kCab);
  p.block_size = 1;
  expect(EvictInputs{0, nullptr, &long_keys_v, nullptr, 0, 0}, p, "block_size", "too many key blocks");
  p = params(EvictPolicy::kH2O);
  p.policy = static_cast<EvictPolicy>(17);
  expect(all, p, "policy", "unknown policy");

  // Large N without tensors is fine for the policies that need none: they run in O(keep).
  p = params(EvictPolicy::kStreaming);
  auto big = backend->Evict(EvictInputs{int64_t{1} << 40, nullptr, nullptr, nullptr, 1, 1}, p);
  ASSERT_TRUE(big.ok()) << big.status();
  EXPECT_EQ(big->indices.back(), (int64_t{1} << 40) - 1);
  p = params(EvictPolicy::kRandom);
  big = backend->Evict(EvictInputs{int64_t{1} << 40, nullptr, nullptr, nullptr, 1, 1}, p);
  ASSERT_TRUE(big.ok()) << big.status();
  EXPECT_EQ(big->per_head, 10);
}

}  // namespace
}  // namespace cab
