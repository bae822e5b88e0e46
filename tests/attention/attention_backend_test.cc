// Every attention op of every registered backend against the CPU backend (the reference), on one
// table of problems. The CPU backend itself is held to the naive double reference on the same
// inputs, so the chain is: naive double -> CPU backend -> every other backend. A backend that
// cannot run here (CUDA without a GPU) skips with the reason; CPU-only CI runs the CPU rows.
#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "cab/attention/backend.h"
#include "naive_reference.h"

namespace cab::attention {
namespace {

using testing::FreshSeed;
using testing::HostTensor;
using testing::RandomKeep;
using testing::RandomMask;
using testing::RandomTensor;
using testing::RelError;

enum class Op { kPrefill, kDecode };

// One problem; every backend runs it. For decode, `tokens` is the cache length, `q_len` the new
// queries and `keep` the kept tokens per (batch, kv head) (0: the whole cache).
struct Problem {
  const char* name;
  Op op;
  DType dtype;
  int batch, q_heads, kv_heads, tokens, dim, block;
  bool causal;
  double keep_prob;  // prefill: < 0 dense mask, 0 only the diagonal, else per off-diagonal block
  int q_len;
  int64_t keep;
};

constexpr Problem kProblems[] = {
    {"prefill_random_bf16", Op::kPrefill, DType::kBF16, 1, 2, 2, 256, 128, 128, true, 0.5, 0, 0},
    {"prefill_dense_fp16_d64_b64", Op::kPrefill, DType::kF16, 1, 2, 2, 192, 64, 64, true, -1, 0, 0},
    {"prefill_diagonal_only_bf16", Op::kPrefill, DType::kBF16, 1, 2, 1, 256, 128, 64, true, 0, 0, 0},
    {"prefill_ragged_gqa_batch2_fp16", Op::kPrefill, DType::kF16, 2, 4, 2, 200, 64, 64, true, 0.5, 0, 0},
    {"prefill_noncausal_bf16", Op::kPrefill, DType::kBF16, 1, 2, 2, 256, 64, 128, false, 0.5, 0, 0},
    {"prefill_random_f32_d32", Op::kPrefill, DType::kF32, 1, 2, 2, 96, 32, 32, true, 0.5, 0, 0},
    {"decode_keep_gqa_bf16", Op::kDecode, DType::kBF16, 1, 8, 2, 300, 128, 0, false, 0, 1, 77},
    {"decode_dense_t3_fp16", Op::kDecode, DType::kF16, 2, 4, 4, 260, 64, 0, false, 0, 3, 0},
};

struct Inputs {
  HostTensor q, k, v;
  BlockMask mask;
  KeepIndices keep;
  bool has_keep = false;
};

Inputs MakeInputs(const Problem& p, std::mt19937_64& rng) {
  Inputs in;
  const int n_q = p.op == Op::kPrefill ? p.tokens : p.q_len;
  in.q = RandomTensor(rng, p.dtype, {p.batch, p.q_heads, n_q, p.dim}, 1.5f);
  in.k = RandomTensor(rng, p.dtype, {p.batch, p.kv_heads, p.tokens, p.dim}, 1.5f);
  in.v = RandomTensor(rng, p.dtype, {p.batch, p.kv_heads, p.tokens, p.dim}, 1.0f);
  if (p.op == Op::kPrefill) {
    const int blocks = (p.tokens + p.block - 1) / p.block;
    in.mask = p.keep_prob < 0 ? DenseMask(p.batch, p.q_heads, blocks, p.causal)
                              : RandomMask(rng, p.batch, p.q_heads, blocks, p.causal, p.keep_prob);
  } else if (p.keep > 0) {
    in.keep = RandomKeep(rng, p.batch, p.kv_heads, p.tokens, p.keep);
    in.has_keep = true;
  }
  return in;
}

absl::StatusOr<AttentionResult> RunOp(AttentionBackend& backend, const Problem& p, const Inputs& in) {
  if (p.op == Op::kPrefill) {
    PrefillOptions opt;
    opt.block_size = p.block;
    opt.causal = p.causal;
    return backend.Prefill(in.q.view(), in.k.view(), in.v.view(), in.mask, opt);
  }
  return backend.Decode(in.q.view(), in.k.view(), in.v.view(), in.has_keep ? &in.keep : nullptr, {});
}

absl::Status Supports(const AttentionBackend& backend, const Problem& p) {
  return p.op == Op::kPrefill ? backend.SupportsPrefill(p.dtype, p.dim, p.block) : backend.SupportsDecode(p.dtype, p.dim);
}

// The kernels round P to the input precision: bf16 carries 8 bits of mantissa, fp16 11.
double Tolerance(DType dtype) { return dtype == DType::kBF16 ? 1e-2 : dtype == DType::kF16 ? 1e-3 : 1e-5; }

struct Case {
  std::string backend;
  Problem problem;
};
void PrintTo(const Case& c, std::ostream* os) { *os << c.backend << "_" << c.problem.name; }

std::vector<Case> AllCases() {
  std::vector<Case> cases;
  for (const std::string& b : RegisteredAttentionBackends()) {
    for (const Problem& p : kProblems) cases.push_back({b, p});
  }
  return cases;
}

class EveryBackend : public ::testing::TestWithParam<Case> {};

TEST_P(EveryBackend, MatchesTheCpuBackend) {
  const Case c = GetParam();
  auto backend = MakeAttentionBackend(c.backend);
  if (!backend.ok()) GTEST_SKIP() << c.backend << " not available here: " << backend.status();
  ASSERT_EQ((*backend)->Name(), c.backend);
  const Problem& p = c.problem;
  if (auto st = Supports(**backend, p); !st.ok()) {
    // Not supported must mean refused with the same INVALID_ARGUMENT, never a wrong answer.
    EXPECT_EQ(st.code(), absl::StatusCode::kInvalidArgument) << st;
    const uint64_t seed = FreshSeed();
    std::mt19937_64 rng(seed);
    const Inputs in = MakeInputs(p, rng);
    EXPECT_EQ(RunOp(**backend, p, in).status().code(), absl::StatusCode::kInvalidArgument);
    return;
  }
  const uint64_t seed = FreshSeed();
  SCOPED_TRACE(::testing::Message() << "seed " << seed);
  std::mt19937_64 rng(seed);
  const Inputs in = MakeInputs(p, rng);

  auto cpu = MakeCpuAttentionBackend();
  auto want = RunOp(*cpu, p, in);
  ASSERT_TRUE(want.ok()) << want.status();
  // The reference chain's first link: the CPU backend against the naive double evaluation.
  const std::vector<double> naive = p.op == Op::kPrefill
                                        ? testing::NaivePrefill(in.q, in.k, in.v, in.mask, p.block, p.causal)
                                        : testing::NaiveDecode(in.q, in.k, in.v, in.has_keep ? &in.keep : nullptr);
  EXPECT_LT(RelError(want->out.data, naive), 1e-5);

  auto got = RunOp(**backend, p, in);
  ASSERT_TRUE(got.ok()) << got.status();
  EXPECT_EQ(got->out.shape, want->out.shape);
  std::vector<double> cpu_out(want->out.data.begin(), want->out.data.end());
  EXPECT_LT(RelError(got->out.data, cpu_out), Tolerance(p.dtype)) << c.backend << " on " << got->device;
  EXPECT_GE(got->kernel_ms, 0.0);
}

INSTANTIATE_TEST_SUITE_P(Table, EveryBackend, ::testing::ValuesIn(AllCases()),
                         [](const ::testing::TestParamInfo<Case>& info) {
                           return info.param.backend + "_" + info.param.problem.name;
                         });

TEST(Registry, CpuIsAlwaysThereAndFirst) {
  const auto names = RegisteredAttentionBackends();
  ASSERT_FALSE(names.empty());
  EXPECT_EQ(names.front(), "cpu");
  const auto avail = AvailableAttentionBackends();
  ASSERT_FALSE(avail.empty());
  EXPECT_EQ(avail.front(), "cpu");
  auto cpu = MakeAttentionBackend("cpu");
  ASSERT_TRUE(cpu.ok());
  EXPECT_EQ((*cpu)->Device(), "cpu");
}

TEST(Registry, UnknownNameIsInvalidArgumentNamingTheField) {
  auto b = MakeAttentionBackend("tpu");
  ASSERT_FALSE(b.ok());
  EXPECT_EQ(b.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(b.status().message().find("backend"), std::string::npos) << b.status();
}

TEST(Registry, CudaWithoutGpuSaysWhy) {
  std::string why;
  if (CudaAvailable(&why)) GTEST_SKIP() << "a CUDA device is present";
  auto b = MakeAttentionBackend("cuda");
  ASSERT_FALSE(b.ok());
  EXPECT_EQ(b.status().code(), absl::StatusCode::kFailedPrecondition);
  auto sel = SelectPrefillBackend(Device::kCuda, DType::kBF16, 128, 128);
  EXPECT_EQ(sel.status().code(), absl::StatusCode::kFailedPrecondition);
  auto fallback = SelectPrefillBackend(Device::kAuto, DType::kBF16, 128, 128);
  ASSERT_TRUE(fallback.ok());
  EXPECT_EQ((*fallback)->Name(), "cpu");
}

TEST(Registry, AutoPicksCudaOnlyForProblemsItTakes) {
  auto f32 = SelectPrefillBackend(Device::kAuto, DType::kF32, 128, 128);  // the kernels take 16-bit only
  ASSERT_TRUE(f32.ok());
  EXPECT_EQ((*f32)->Name(), "cpu");
  auto d32 = SelectDecodeBackend(Device::kAuto, DType::kBF16, 32);
  ASSERT_TRUE(d32.ok());
  EXPECT_EQ((*d32)->Name(), "cpu");
  std::string why;
  if (!CudaAvailable(&why)) GTEST_SKIP() << "no GPU: " << why;
  auto bf16 = SelectPrefillBackend(Device::kAuto, DType::kBF16, 128, 128);
  ASSERT_TRUE(bf16.ok());
  EXPECT_EQ((*bf16)->Name(), "cuda");
  EXPECT_EQ(SelectPrefillBackend(Device::kCuda, DType::kF32, 128, 128).status().code(), absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace cab::attention
