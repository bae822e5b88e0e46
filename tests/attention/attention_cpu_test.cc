// CPU path of cab_attention against the naive double-precision references (fresh random inputs on
// every run; the seed is printed so that a failure can be replayed).
#include <gtest/gtest.h>

#include "cab/attention/attention.h"
#include "cab/attention/cuda_attention.h"
#include "naive_reference.h"

namespace cab::attention {
namespace {

using testing::FreshSeed;
using testing::HostTensor;
using testing::NaiveDecode;
using testing::NaivePrefill;
using testing::RandomKeep;
using testing::RandomMask;
using testing::RandomTensor;
using testing::RelError;

struct PrefillCase {
  const char* name;
  DType dtype;
  int batch, q_heads, kv_heads, tokens, dim, block;
  bool causal;
  double keep_prob;  // < 0: dense mask; 0: only the diagonal
  bool shared_mask;
};

// Short test names in ctest listings (the default prints the struct's bytes).
void PrintTo(const PrefillCase& c, std::ostream* os) { *os << c.name; }
class CpuPrefill : public ::testing::TestWithParam<PrefillCase> {};

TEST_P(CpuPrefill, MatchesNaiveReference) {
  const PrefillCase c = GetParam();
  const uint64_t seed = FreshSeed();
  SCOPED_TRACE(::testing::Message() << "seed " << seed);
  std::mt19937_64 rng(seed);
  const HostTensor q = RandomTensor(rng, c.dtype, {c.batch, c.q_heads, c.tokens, c.dim}, 1.5f);
  const HostTensor k = RandomTensor(rng, c.dtype, {c.batch, c.kv_heads, c.tokens, c.dim}, 1.5f);
  const HostTensor v = RandomTensor(rng, c.dtype, {c.batch, c.kv_heads, c.tokens, c.dim}, 1.0f);
  const int blocks = (c.tokens + c.block - 1) / c.block;
  const int mh = c.shared_mask ? 1 : c.q_heads;
  const BlockMask mask = c.keep_prob < 0 ? DenseMask(c.batch, mh, blocks, c.causal)
                                         : RandomMask(rng, c.batch, mh, blocks, c.causal, c.keep_prob);
  PrefillOptions opt;
  opt.block_size = c.block;
  opt.causal = c.causal;
  opt.device = Device::kCpu;
  auto got = BlockSparsePrefill(q.view(), k.view(), v.view(), mask, opt);
  ASSERT_TRUE(got.ok()) << got.status();
  EXPECT_EQ(got->device, "cpu");
  EXPECT_EQ(got->out.shape, (std::vector<int64_t>{c.batch, c.q_heads, c.tokens, c.dim}));
  EXPECT_LT(RelError(got->out.data, NaivePrefill(q, k, v, mask, c.block, c.causal)), 1e-5);
}

INSTANTIATE_TEST_SUITE_P(
    Cases, CpuPrefill,
    ::testing::Values(PrefillCase{"random_bf16", DType::kBF16, 1, 2, 2, 256, 64, 64, true, 0.4, false},
                      PrefillCase{"dense_fp16", DType::kF16, 1, 2, 1, 192, 32, 64, true, -1, false},
                      PrefillCase{"diagonal_only", DType::kF32, 1, 2, 2, 256, 64, 64, true, 0.0, false},
                      PrefillCase{"ragged_tail_gqa", DType::kBF16, 2, 4, 2, 200, 64, 64, true, 0.5, false},
                      PrefillCase{"block128_shared_mask", DType::kF32, 1, 4, 1, 300, 16, 128, true, 0.5, true},
                      PrefillCase{"non_causal", DType::kF16, 1, 2, 2, 150, 32, 32, false, 0.5, false}),
    [](const ::testing::TestParamInfo<PrefillCase>& info) { return std::string(info.param.name); });

TEST(CpuPrefill, RowWithoutKeptBlocksIsZero) {
  std::mt19937_64 rng(FreshSeed());
  const HostTensor q = RandomTensor(rng, DType::kF32, {1, 1, 128, 16}, 1.f);
  BlockMask mask = DenseMask(1, 1, 2, true);
  // Row 1 keeps nothing: its 64 queries see no key.
  mask.col_indices = {0};
  mask.row_offsets = {0, 1, 1};
  PrefillOptions opt;
  opt.block_size = 64;
  opt.device = Device::kCpu;
  auto got = BlockSparsePrefill(q.view(), q.view(), q.view(), mask, opt);
  ASSERT_TRUE(got.ok()) << got.status();
  for (int64_t i = 64 * 16; i < 128 * 16; ++i) ASSERT_EQ(got->out.data[i], 0.f);
  EXPECT_LT(RelError(got->out.data, NaivePrefill(q, q, q, mask, 64, true)), 1e-5);
}

struct DecodeCase {
  const char* name;
  DType dtype;
  int batch, q_heads, kv_heads, q_len, tokens, dim;
  int64_t keep;  // 0: all tokens
};
// Short test names in ctest listings (the default prints the struct's bytes).
void PrintTo(const DecodeCase& c, std::ostream* os) { *os << c.name; }
class CpuDecode : public ::testing::TestWithParam<DecodeCase> {};

TEST_P(CpuDecode, MatchesNaiveReference) {
  const DecodeCase c = GetParam();
  const uint64_t seed = FreshSeed();
  SCOPED_TRACE(::testing::Message() << "seed " << seed);
  std::mt19937_64 rng(seed);
  const HostTensor q = RandomTensor(rng, c.dtype, {c.batch, c.q_heads, c.q_len, c.dim}, 1.5f);
  const HostTensor k = RandomTensor(rng, c.dtype, {c.batch, c.kv_heads, c.tokens, c.dim}, 1.5f);
  const HostTensor v = RandomTensor(rng, c.dtype, {c.batch, c.kv_heads, c.tokens, c.dim}, 1.f);
  KeepIndices keep;
  if (c.keep > 0) keep = RandomKeep(rng, c.batch, c.kv_heads, c.tokens, c.keep);
  DecodeOptions opt;
  opt.device = Device::kCpu;
  auto got = SparseDecode(q.view(), k.view(), v.view(), c.keep > 0 ? &keep : nullptr, opt);
  ASSERT_TRUE(got.ok()) << got.status();
  EXPECT_LT(RelError(got->out.data, NaiveDecode(q, k, v, c.keep > 0 ? &keep : nullptr)), 1e-5);
}

INSTANTIATE_TEST_SUITE_P(Cases, CpuDecode,
                         ::testing::Values(DecodeCase{"keep_bf16_gqa", DType::kBF16, 2, 8, 2, 1, 500, 64, 77},
                                           DecodeCase{"dense_fp16", DType::kF16, 1, 4, 4, 3, 300, 32, 0},
                                           DecodeCase{"keep_all_fp32", DType::kF32, 1, 2, 1, 2, 64, 16, 64}),
                         [](const ::testing::TestParamInfo<DecodeCase>& info) { return std::string(info.param.name); });

TEST(Recall, DenseIsOneAndSparseIsTheKeptMass) {
  std::mt19937_64 rng(FreshSeed());
  const HostTensor q = RandomTensor(rng, DType::kF32, {1, 2, 192, 16}, 2.f);
  const HostTensor k = RandomTensor(rng, DType::kF32, {1, 1, 192, 16}, 2.f);
  PrefillOptions opt;
  opt.block_size = 64;
  auto dense = AttentionRecall(q.view(), k.view(), DenseMask(1, 2, 3, true), opt);
  ASSERT_TRUE(dense.ok()) << dense.status();
  EXPECT_NEAR(*dense, 1.0, 1e-9);
  const BlockMask diag = RandomMask(rng, 1, 2, 3, true, 0.0);
  auto sparse = AttentionRecall(q.view(), k.view(), diag, opt);
  ASSERT_TRUE(sparse.ok());
  // Naive: for each query, mass on its own block over mass on all visible keys.
  const auto Q = q.AsDouble(), K = k.AsDouble();
  double want = 0;
  for (int h = 0; h < 2; ++h) {
    for (int t = 0; t < 192; ++t) {
      double all = 0, in = 0;
      for (int u = 0; u <= t; ++u) {
        double dot = 0;
        for (int d = 0; d < 16; ++d) dot += Q[(h * 192 + t) * 16 + d] * K[u * 16 + d];
        const double w = std::exp(dot / 4.0);
        all += w;
        if (u / 64 == t / 64) in += w;
      }
      want += in / all;
    }
  }
  EXPECT_NEAR(*sparse, want / 384, 1e-6);
  EXPECT_LT(*sparse, 1.0);
}

TEST(DecodeRecall, KeepAllIsOne) {
  std::mt19937_64 rng(FreshSeed());
  const HostTensor q = RandomTensor(rng, DType::kF32, {1, 2, 1, 16}, 2.f);
  const HostTensor k = RandomTensor(rng, DType::kF32, {1, 2, 50, 16}, 2.f);
  auto all = DecodeRecall(q.view(), k.view(), nullptr, {});
  ASSERT_TRUE(all.ok());
  EXPECT_NEAR(*all, 1.0, 1e-9);
  const KeepIndices keep = RandomKeep(rng, 1, 2, 50, 10);
  auto some = DecodeRecall(q.view(), k.view(), &keep, {});
  ASSERT_TRUE(some.ok());
  EXPECT_GT(*some, 0.0);
  EXPECT_LT(*some, 1.0);
}

TEST(BlocksToKeepIndices, ExpandsBlocksAndClipsTheTail) {
  auto keep = BlocksToKeepIndices({{2, 0}, {1, 2}}, 1, 2, 4, 10);
  ASSERT_TRUE(keep.ok()) << keep.status();
  EXPECT_EQ(keep->per_head, 6);
  EXPECT_EQ(keep->indices, (std::vector<int64_t>{0, 1, 2, 3, 8, 9, 4, 5, 6, 7, 8, 9}));
  EXPECT_EQ(BlocksToKeepIndices({{0}, {0, 1}}, 1, 2, 4, 10).status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(BlocksToKeepIndices({{5}}, 1, 1, 4, 10).status().code(), absl::StatusCode::kInvalidArgument);
}

// Every caller mistake is INVALID_ARGUMENT and names the field.
TEST(Validation, NamesTheField) {
  std::mt19937_64 rng(FreshSeed());
  const HostTensor q = RandomTensor(rng, DType::kBF16, {1, 2, 128, 16}, 1.f);
  const HostTensor k = RandomTensor(rng, DType::kBF16, {1, 2, 128, 16}, 1.f);
  const HostTensor k16 = RandomTensor(rng, DType::kF16, {1, 2, 128, 16}, 1.f);
  const HostTensor k3 = RandomTensor(rng, DType::kBF16, {1, 3, 128, 16}, 1.f);
  PrefillOptions opt;
  opt.block_size = 64;
  auto expect = [](const absl::Status& st, const std::string& field) {
    EXPECT_EQ(st.code(), absl::StatusCode::kInvalidArgument) << st;
    EXPECT_NE(std::string(st.message()).find(field), std::string::npos) << st;
  };
  const BlockMask good = DenseMask(1, 2, 2, true);
  expect(BlockSparsePrefill(q.view(), k16.view(), k.view(), good, opt).status(), "k.dtype");
  expect(BlockSparsePrefill(q.view(), k3.view(), k3.view(), good, opt).status(), "k.shape[1]");
  expect(BlockSparsePrefill(q.view(), k.view(), k.view(), DenseMask(1, 2, 3, true), opt).status(), "mask");
  expect(BlockSparsePrefill(q.view(), k.view(), k.view(), DenseMask(1, 2, 2, false), opt).status(), "mask.col_indices");
  BlockMask bad = good;
  bad.col_indices[0] = 7;
  expect(BlockSparsePrefill(q.view(), k.view(), k.view(), bad, opt).status(), "mask.col_indices");
  bad = good;
  bad.row_offsets.pop_back();
  expect(BlockSparsePrefill(q.view(), k.view(), k.view(), bad, opt).status(), "mask.row_offsets");
  PrefillOptions zero = opt;
  zero.block_size = 0;
  expect(BlockSparsePrefill(q.view(), k.view(), k.view(), good, zero).status(), "block_size");
  TensorView empty = q.view();
  empty.data = nullptr;
  expect(BlockSparsePrefill(empty, k.view(), k.view(), good, opt).status(), "q");
  KeepIndices keep = RandomKeep(rng, 1, 2, 128, 4);
  keep.indices[1] = 500;
  expect(SparseDecode(q.view(), k.view(), k.view(), &keep, {}).status(), "keep.indices");
  EXPECT_EQ(ParseDevice("tpu").status().code(), absl::StatusCode::kInvalidArgument);
}

TEST(Device, CudaRequestWithoutGpuIsAClearError) {
  std::string why;
  if (CudaAvailable(&why)) GTEST_SKIP() << "a CUDA device is present";
  std::mt19937_64 rng(FreshSeed());
  const HostTensor q = RandomTensor(rng, DType::kBF16, {1, 1, 64, 64}, 1.f);
  PrefillOptions opt;
  opt.block_size = 64;
  opt.device = Device::kCuda;
  const auto st = BlockSparsePrefill(q.view(), q.view(), q.view(), DenseMask(1, 1, 1, true), opt).status();
  EXPECT_EQ(st.code(), absl::StatusCode::kFailedPrecondition) << st;
  opt.device = Device::kAuto;  // auto falls back to the CPU
  auto got = BlockSparsePrefill(q.view(), q.view(), q.view(), DenseMask(1, 1, 1, true), opt);
  ASSERT_TRUE(got.ok());
  EXPECT_EQ(got->device, "cpu");
}

}  // namespace
}  // namespace cab::attention

#ifdef CAB_ATTENTION_HAVE_CUDA
// The device entry points validate their arguments on the host, so this runs without a GPU too.
namespace cab::attention {
namespace {
TEST(DeviceArgs, CheckedOnTheHost) {
  int dummy = 0;
  cuda::PrefillArgs a;
  a.q = a.k = a.v = &dummy;
  a.o = &dummy;
  a.batch = 1;
  a.q_heads = 4;
  a.kv_heads = 2;
  a.head_dim = 128;
  a.tokens = 1000;
  a.block_size = 128;
  a.mask_heads = 4;
  const int64_t offsets[2] = {0, 0};
  a.row_offsets = offsets;
  a.col_indices = reinterpret_cast<const int32_t*>(&dummy);
  EXPECT_TRUE(cuda::CheckPrefillArgs(a).ok());
  auto expect = [](cuda::PrefillArgs x, const char* field) {
    const absl::Status st = cuda::CheckPrefillArgs(x);
    EXPECT_EQ(st.code(), absl::StatusCode::kInvalidArgument) << field;
    EXPECT_NE(std::string(st.message()).find(field), std::string::npos) << st;
  };
  cuda::PrefillArgs b = a;
  b.head_dim = 96;
  expect(b, "head_dim");
  b = a;
  b.block_size = 32;
  expect(b, "block_size");
  b = a;
  b.kv_heads = 3;
  expect(b, "kv_heads");
  b = a;
  b.kv_num_blocks = reinterpret_cast<const int32_t*>(&dummy);  // both mask layouts set
  expect(b, "mask");
  b = a;
  b.dtype = DType::kF32;
  expect(b, "dtype");
  b = a;
  b.tokens = int64_t{128} * 40000;
  expect(b, "tokens");

  cuda::DecodeArgs d;
  d.q = d.k = d.v = &dummy;
  d.o = &dummy;
  d.batch = 1;
  d.q_heads = 8;
  d.kv_heads = 2;
  d.head_dim = 64;
  d.tokens = 100;
  EXPECT_TRUE(cuda::CheckDecodeArgs(d).ok());
  EXPECT_GT(cuda::DecodeWorkspaceBytes(d), 0u);
  d.indices = reinterpret_cast<const int32_t*>(&dummy);
  d.keep = 101;
  EXPECT_EQ(cuda::CheckDecodeArgs(d).code(), absl::StatusCode::kInvalidArgument);
  d.keep = 10;
  d.head_dim = 80;
  EXPECT_EQ(cuda::CheckDecodeArgs(d).code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(cuda::DecodeWorkspaceBytes(d), 0u);
}
}  // namespace
}  // namespace cab::attention
#endif
