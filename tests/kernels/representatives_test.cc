// Backend::PredictMaskFromRepresentatives' default (what the CPU backend runs, and the CUDA backend
// for the cases it does not read directly): the same masks as building the coarse state with
// CoarseFromRepresentatives and calling PredictMask, errors that name the request's fields, and the
// time taking the representatives in reported as coarsen_seconds.
#include <cmath>
#include <cstring>
#include <limits>
#include <string>
#include <vector>

#include "cab/backend.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "test_util.h"

namespace cab {
namespace {

using ::testing::HasSubstr;

using test::OwnedTensor;

// Representatives [B, H, M, D] in `dtype`: grid values, exact in every dtype.
OwnedTensor MakeReps(std::vector<int64_t> shape, DType dtype, uint64_t seed) {
  return test::RandomTensor(shape, dtype, seed);
}

TEST(PredictMaskFromRepresentatives, EqualsCoarseStateThenPredictMask) {
  auto cpu = MakeCpuBackend({2});
  // GQA (g = 2), batch 2, N = 1000 in blocks of 64 (a partial last block): M = 16.
  const int64_t tokens = 1000;
  const int block = 64, M = 16;
  for (DType dtype : {DType::kF32, DType::kBF16}) {
    const OwnedTensor q = MakeReps({2, 4, M, 32}, dtype, 1), k = MakeReps({2, 2, M, 32}, dtype, 2);
    for (MaskPolicy policy : {MaskPolicy::kCab, MaskPolicy::kMagnitude, MaskPolicy::kStreaming}) {
      SCOPED_TRACE(Name(policy) + " " + DTypeName(dtype));
      MaskParams p;
      p.policy = policy;
      p.sparsity = 0.7f;
      RepresentativeInputs in;
      in.q = q.view();
      in.k = k.view();
      in.block_size = block;
      in.tokens = tokens;
      auto direct = cpu->PredictMaskFromRepresentatives(in, p, true, CallContext{});
      ASSERT_TRUE(direct.ok()) << direct.status();
      auto qc = CoarseFromRepresentatives(q.view(), nullptr, nullptr, block, tokens);
      auto kc = CoarseFromRepresentatives(k.view(), nullptr, nullptr, block, tokens);
      ASSERT_TRUE(qc.ok() && kc.ok());
      auto two_step = cpu->PredictMask(*qc, *kc, p, true);
      ASSERT_TRUE(two_step.ok()) << two_step.status();
      EXPECT_EQ(direct->mask.row_offsets, two_step->mask.row_offsets);
      EXPECT_EQ(direct->mask.col_indices, two_step->mask.col_indices);
      EXPECT_EQ(direct->mask.heads, 4);
      EXPECT_EQ(direct->diagnostics.density, two_step->diagnostics.density);
      EXPECT_GT(direct->coarsen_seconds, 0);
      EXPECT_EQ(two_step->coarsen_seconds, 0);
    }
  }
}

TEST(PredictMaskFromRepresentatives, KeyBoundsReachQuest) {
  auto cpu = MakeCpuBackend({2});
  const OwnedTensor q = MakeReps({1, 2, 8, 16}, DType::kF32, 3), k = MakeReps({1, 2, 8, 16}, DType::kF32, 4);
  // Bounds around the representative: kmin = rep - 1, kmax = rep + 1.
  std::vector<double> below = k.values, above = k.values;
  for (double& v : below) v -= 1;
  for (double& v : above) v += 1;
  const OwnedTensor kmin = test::FromValues(k.shape, DType::kF32, below);
  const OwnedTensor kmax = test::FromValues(k.shape, DType::kF32, above);
  MaskParams p;
  p.policy = MaskPolicy::kQuest;
  RepresentativeInputs in;
  in.q = q.view();
  in.k = k.view();
  in.block_size = 16;
  in.tokens = 128;
  // Without bounds the keys cannot serve Quest (the representative is no bound).
  EXPECT_FALSE(cpu->PredictMaskFromRepresentatives(in, p, false, CallContext{}).ok());
  const TensorView lo = kmin.view(), hi = kmax.view();
  in.kmin = &lo;
  in.kmax = &hi;
  auto r = cpu->PredictMaskFromRepresentatives(in, p, false, CallContext{});
  ASSERT_TRUE(r.ok()) << r.status();
  auto qc = CoarseFromRepresentatives(q.view(), nullptr, nullptr, 16, 128);
  auto kc = CoarseFromRepresentatives(k.view(), &lo, &hi, 16, 128);
  ASSERT_TRUE(qc.ok() && kc.ok());
  auto two_step = cpu->PredictMask(*qc, *kc, p, false);
  ASSERT_TRUE(two_step.ok());
  EXPECT_EQ(r->mask.col_indices, two_step->mask.col_indices);
}

TEST(PredictMaskFromRepresentatives, ErrorsNameTheRequestFields) {
  auto cpu = MakeCpuBackend({1});
  OwnedTensor q = MakeReps({1, 2, 4, 8}, DType::kBF16, 5);
  const OwnedTensor k = MakeReps({1, 2, 4, 8}, DType::kBF16, 6), k_short = MakeReps({1, 2, 3, 8}, DType::kBF16, 7);
  const OwnedTensor k_dim = MakeReps({1, 2, 4, 16}, DType::kBF16, 8);
  MaskParams p;
  RepresentativeInputs in;
  in.q = q.view();
  in.k = k.view();
  in.block_size = 16;
  in.tokens = 64;
  ASSERT_TRUE(cpu->PredictMaskFromRepresentatives(in, p, false, CallContext{}).ok());

  in.k = k_short.view();  // 3 blocks where 64 tokens make 4
  auto s = cpu->PredictMaskFromRepresentatives(in, p, false, CallContext{}).status();
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(s.message()), HasSubstr("k_rep: "));

  in.k = k_dim.view();  // dim 16 against q's 8
  s = cpu->PredictMaskFromRepresentatives(in, p, false, CallContext{}).status();
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(s.message()), HasSubstr("k.dim"));

  in.k = k.view();
  const TensorView only_min = k.view();
  in.kmin = &only_min;  // kmin without kmax
  s = cpu->PredictMaskFromRepresentatives(in, p, false, CallContext{}).status();
  EXPECT_THAT(std::string(s.message()), HasSubstr("k_rep: kmax: missing"));
  in.kmin = nullptr;

  const uint16_t nan = 0x7fc0;  // bf16 NaN at element 5 of q
  std::memcpy(q.bytes.data() + 2 * 5, &nan, 2);
  in.q = q.view();
  s = cpu->PredictMaskFromRepresentatives(in, p, false, CallContext{}).status();
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(s.message()), HasSubstr("q_rep: reps: element 5 is not finite"));
}

}  // namespace
}  // namespace cab
