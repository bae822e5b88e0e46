// The CUDA backend's PredictMaskFromRepresentatives: fp32 and bf16 representatives are uploaded as
// they arrived (no host coarse state), and must give exactly the masks of the coarse-state path
// (CoarseFromRepresentatives + PredictMask on the same backend: the device sees the same operands),
// reject bad input with the same status as the default path, and share launches with coarse-state
// requests of the same shape. Skips without a GPU.
#include <algorithm>
#include <cstdio>
#include <cstring>
#include <string>
#include <thread>
#include <vector>

#include "cab/backend.h"
#include "gtest/gtest.h"
#include "plugin_fixture.h"

namespace cab {
namespace {

struct Case {
  int B, Hq, Hkv, M, D, block;
  int64_t tokens;
  DType dtype;
};

RepresentativeInputs InputsOf(const Input& q, const Input& k, const Case& c) {
  RepresentativeInputs in;
  in.q = q.view();
  in.k = k.view();
  in.block_size = c.block;
  in.tokens = c.tokens;
  return in;
}

absl::StatusOr<MaskResult> ViaCoarseState(Backend& b, const RepresentativeInputs& in, const MaskParams& p) {
  auto q = CoarseFromRepresentatives(in.q, nullptr, nullptr, in.block_size, in.tokens);
  auto k = CoarseFromRepresentatives(in.k, in.kmin, in.kmax, in.block_size, in.tokens);
  if (!q.ok()) return q.status();
  if (!k.ok()) return k.status();
  return b.PredictMask(*q, *k, p, false);
}

TEST(CudaRepresentatives, DirectUploadEqualsCoarseStatePath) {
  REQUIRE_GPU();
  const std::vector<Case> cases = {
      {1, 4, 2, 40, 64, 64, 40 * 64 - 5, DType::kBF16},  // GQA, partial last block
      {2, 2, 2, 33, 32, 16, 33 * 16, DType::kF32},       // batch 2, fp32 (not bf16-exact: fp32 GEMM)
      {1, 8, 1, 300, 128, 64, 300 * 64, DType::kBF16},   // g = 8, D = 128
      {1, 2, 1, 1100, 16, 16, 1100 * 16 - 3, DType::kBF16},  // M > 1024: causal score bands, 16-byte loads
  };
  int compared = 0;
  for (const Case& c : cases) {
    const Input q = MakeInput({c.B, c.Hq, c.M, c.D}, c.dtype, 11 + c.M, false);
    const Input k = MakeInput({c.B, c.Hkv, c.M, c.D}, c.dtype, 12 + c.M, false);
    const RepresentativeInputs in = InputsOf(q, k, c);
    for (MaskPolicy policy : {MaskPolicy::kCab, MaskPolicy::kMagnitude, MaskPolicy::kAdaptive, MaskPolicy::kStreaming}) {
      SCOPED_TRACE(Name(policy) + " M=" + std::to_string(c.M) + " " + DTypeName(c.dtype));
      MaskParams p;
      p.policy = policy;
      p.sparsity = 0.9f;
      auto direct = gpu->PredictMaskFromRepresentatives(in, p, false, CallContext{});
      ASSERT_TRUE(direct.ok()) << direct.status();
      auto coarse = ViaCoarseState(*gpu, in, p);
      ASSERT_TRUE(coarse.ok()) << coarse.status();
      EXPECT_EQ(direct->mask.row_offsets, coarse->mask.row_offsets);
      EXPECT_EQ(direct->mask.col_indices, coarse->mask.col_indices);
      EXPECT_EQ(direct->mask.heads, c.Hq);
      EXPECT_EQ(direct->mask.batch, c.B);
      EXPECT_EQ(direct->device, coarse->device);  // streaming runs on the CPU (-1) both ways
      EXPECT_GT(direct->coarsen_seconds, 0);
      ++compared;
    }
    // Rows of a decode step: only the last block's row.
    MaskParams last;
    last.row_begin = c.M - 1;
    auto direct = gpu->PredictMaskFromRepresentatives(in, last, false, CallContext{});
    auto coarse = ViaCoarseState(*gpu, in, last);
    ASSERT_TRUE(direct.ok() && coarse.ok());
    EXPECT_EQ(direct->mask.col_indices, coarse->mask.col_indices);
    EXPECT_EQ(direct->mask.rows, 1);
  }
  std::printf("%d (case, policy) pairs: direct upload == coarse-state path\n", compared);
}

// A request may mix dtypes (the client sends mean representatives as fp32 next to bf16 max-L2 ones);
// fp16 takes the default path. Both give the coarse-state path's masks.
TEST(CudaRepresentatives, MixedAndHalfDtypesEqualCoarseStatePath) {
  REQUIRE_GPU();
  const Case c{1, 4, 2, 50, 64, 32, 50 * 32 - 7, DType::kF32};
  for (auto [qd, kd] : {std::pair{DType::kF32, DType::kBF16}, {DType::kBF16, DType::kF32}, {DType::kF16, DType::kF16},
                        {DType::kBF16, DType::kF16}}) {
    SCOPED_TRACE(DTypeName(qd) + " / " + DTypeName(kd));
    const Input q = MakeInput({1, 4, 50, 64}, qd, 61, false);
    const Input k = MakeInput({1, 2, 50, 64}, kd, 62, false);
    const RepresentativeInputs in = InputsOf(q, k, c);
    for (MaskPolicy policy : {MaskPolicy::kCab, MaskPolicy::kMagnitude}) {
      MaskParams p;
      p.policy = policy;
      auto direct = gpu->PredictMaskFromRepresentatives(in, p, false, CallContext{});
      auto coarse = ViaCoarseState(*gpu, in, p);
      ASSERT_TRUE(direct.ok() && coarse.ok()) << direct.status() << coarse.status();
      EXPECT_EQ(direct->mask.row_offsets, coarse->mask.row_offsets);
      EXPECT_EQ(direct->mask.col_indices, coarse->mask.col_indices);
    }
  }
}

TEST(CudaRepresentatives, QuestWithBoundsAndDiagnosticsTakeTheDefaultPath) {
  REQUIRE_GPU();
  const Case c{1, 2, 2, 24, 32, 16, 24 * 16, DType::kF32};
  const Input q = MakeInput({1, 2, 24, 32}, DType::kF32, 21, false);
  const Input k = MakeInput({1, 2, 24, 32}, DType::kF32, 22, false);
  Input kmin = k, kmax = k;
  for (size_t i = 0; i < k.bytes.size() / 4; ++i) {
    float v;
    std::memcpy(&v, k.bytes.data() + 4 * i, 4);
    const float lo = v - 0.5f, hi = v + 0.5f;
    std::memcpy(kmin.bytes.data() + 4 * i, &lo, 4);
    std::memcpy(kmax.bytes.data() + 4 * i, &hi, 4);
  }
  RepresentativeInputs in = InputsOf(q, k, c);
  const TensorView lo = kmin.view(), hi = kmax.view();
  in.kmin = &lo;
  in.kmax = &hi;
  MaskParams quest;
  quest.policy = MaskPolicy::kQuest;
  auto a = gpu->PredictMaskFromRepresentatives(in, quest, false, CallContext{});
  auto b = ViaCoarseState(*gpu, in, quest);
  ASSERT_TRUE(a.ok() && b.ok()) << a.status() << b.status();
  EXPECT_EQ(a->mask.col_indices, b->mask.col_indices);

  in.kmin = in.kmax = nullptr;
  MaskParams cab;
  auto d = gpu->PredictMaskFromRepresentatives(in, cab, true, CallContext{});  // diagnostics: CPU
  ASSERT_TRUE(d.ok()) << d.status();
  EXPECT_EQ(d->diagnostics.heads.size(), 2u);
}

TEST(CudaRepresentatives, BadInputGetsTheDefaultPathsStatus) {
  REQUIRE_GPU();
  auto cpu = MakeCpuBackend({1});  // runs the default path
  const Case c{1, 4, 2, 8, 16, 16, 128, DType::kBF16};
  Input q = MakeInput({1, 4, 8, 16}, DType::kBF16, 31, false);
  const Input k = MakeInput({1, 2, 8, 16}, DType::kBF16, 32, false);
  const Input k_heads3 = MakeInput({1, 3, 8, 16}, DType::kBF16, 33, false);
  const Input k_dim = MakeInput({1, 2, 8, 32}, DType::kBF16, 34, false);
  const Input k_batch = MakeInput({2, 2, 8, 16}, DType::kBF16, 35, false);
  const Input k_blocks = MakeInput({1, 2, 7, 16}, DType::kBF16, 36, false);
  Input q_nan = q;
  const uint16_t nan = 0x7fc0;
  std::memcpy(q_nan.bytes.data() + 2 * 9, &nan, 2);

  struct Bad {
    const char* what;
    const Input* q;
    const Input* k;
    MaskParams p;
    int64_t tokens;
  };
  MaskParams plain, bad_sparsity, bad_row;
  bad_sparsity.sparsity = 1.5f;
  bad_row.row_begin = 8;
  const std::vector<Bad> bad = {
      {"kv heads not dividing q heads", &q, &k_heads3, plain, 128},
      {"dim mismatch", &q, &k_dim, plain, 128},
      {"batch mismatch", &q, &k_batch, plain, 128},
      {"k blocks short of tokens", &q, &k_blocks, plain, 128},
      {"tokens make fewer blocks", &q, &k, plain, 100},
      {"non-finite q", &q_nan, &k, plain, 128},
      {"sparsity out of range", &q, &k, bad_sparsity, 128},
      {"row_begin past the blocks", &q, &k, bad_row, 128},
  };
  for (const Bad& b : bad) {
    SCOPED_TRACE(b.what);
    RepresentativeInputs in = InputsOf(*b.q, *b.k, c);
    in.tokens = b.tokens;
    const absl::Status want = cpu->PredictMaskFromRepresentatives(in, b.p, false, CallContext{}).status();
    const absl::Status got = gpu->PredictMaskFromRepresentatives(in, b.p, false, CallContext{}).status();
    ASSERT_FALSE(want.ok());
    EXPECT_EQ(got, want);
  }
  // Still serving.
  EXPECT_TRUE(gpu->PredictMaskFromRepresentatives(InputsOf(q, k, c), plain, false, CallContext{}).ok());
}

TEST(CudaRepresentatives, ShareLaunchesWithCoarseStateRequests) {
  REQUIRE_GPU();
  Plugin batched = LoadPlugin("gemm=auto;max_batch=4;max_queue_delay_us=50000");
  ASSERT_NE(batched.backend, nullptr) << batched.why;
  const Case c{1, 4, 2, 64, 64, 64, 64 * 64, DType::kBF16};
  const int kRequests = 4;
  std::vector<Input> qs, ks;
  for (int i = 0; i < kRequests; ++i) {
    qs.push_back(MakeInput({1, 4, 64, 64}, DType::kBF16, 40 + i, false));
    ks.push_back(MakeInput({1, 2, 64, 64}, DType::kBF16, 50 + i, false));
  }
  MaskParams p;
  std::vector<BlockMask> alone;
  for (int i = 0; i < kRequests; ++i) {
    auto r = gpu->PredictMaskFromRepresentatives(InputsOf(qs[i], ks[i], c), p, false, CallContext{});
    ASSERT_TRUE(r.ok()) << r.status();
    alone.push_back(r->mask);
  }
  // Even requests send representatives, odd ones a coarse state of the same (bf16-exact) values:
  // one batch key, so they may share a launch.
  std::vector<absl::StatusOr<MaskResult>> together(kRequests, absl::InternalError("not run"));
  std::vector<std::thread> threads;
  for (int i = 0; i < kRequests; ++i) {
    threads.emplace_back([&, i] {
      const RepresentativeInputs in = InputsOf(qs[i], ks[i], c);
      together[i] = i % 2 == 0 ? batched.backend->PredictMaskFromRepresentatives(in, p, false, CallContext{})
                               : ViaCoarseState(*batched.backend, in, p);
    });
  }
  for (auto& t : threads) t.join();
  std::vector<std::pair<double, double>> launches;
  for (int i = 0; i < kRequests; ++i) {
    ASSERT_TRUE(together[i].ok()) << together[i].status();
    EXPECT_EQ(together[i]->mask.row_offsets, alone[i].row_offsets) << "request " << i;
    EXPECT_EQ(together[i]->mask.col_indices, alone[i].col_indices) << "request " << i;
    launches.push_back({together[i]->graph_seconds, together[i]->select_seconds});
  }
  std::sort(launches.begin(), launches.end());
  const size_t distinct = std::unique(launches.begin(), launches.end()) - launches.begin();
  std::printf("%zu launches for %d mixed requests\n", distinct, kRequests);
  EXPECT_LT(distinct, static_cast<size_t>(kRequests)) << "no two concurrent requests shared a launch";
}

}  // namespace
}  // namespace cab
