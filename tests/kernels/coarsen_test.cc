// SPEC 1: coarsening against the naive reference, incremental appends, representatives, and
// every bad-input path.
#include <algorithm>
#include <cmath>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "absl/strings/match.h"
#include "cab/coarse.h"
#include "gtest/gtest.h"
#include "test_util.h"

namespace cab {
namespace {

using test::NaiveCoarse;
using test::NaiveCoarsen;
using test::OwnedTensor;
using test::RandomTensor;

struct Shape {
  int B, H;
  int64_t N;
  int D, block;
  DType dtype;
};

std::string Describe(const Shape& s) {
  return "B=" + std::to_string(s.B) + " H=" + std::to_string(s.H) + " N=" + std::to_string(s.N) +
         " D=" + std::to_string(s.D) + " block=" + std::to_string(s.block) + " " + DTypeName(s.dtype);
}

const std::vector<Shape>& Shapes() {
  static const std::vector<Shape> shapes = {
      {1, 1, 64, 8, 16, DType::kF32},    // whole blocks
      {2, 3, 100, 16, 32, DType::kF16},  // partial last block, batch 2
      {1, 2, 5, 4, 16, DType::kBF16},    // N smaller than one block
      {2, 2, 129, 32, 64, DType::kF32},  // one token in the last block
      {1, 1, 7, 3, 1, DType::kBF16},     // blocks of one token
      {1, 4, 200, 64, 128, DType::kF16},
  };
  return shapes;
}

// Every field of `c` against the naive reference.
void ExpectMatchesNaive(const CoarseBlocks& c, const NaiveCoarse& n, const OwnedTensor& x, int block,
                        const std::string& what) {
  ASSERT_EQ(c.batch, n.batch) << what;
  ASSERT_EQ(c.heads, n.heads) << what;
  ASSERT_EQ(c.blocks, n.blocks) << what;
  ASSERT_EQ(c.dim, n.dim) << what;
  EXPECT_EQ(c.block_size, block) << what;
  EXPECT_EQ(c.tokens, x.shape[2]) << what;
  EXPECT_TRUE(c.has_bounds) << what;
  ASSERT_EQ(c.maxl2.size(), n.maxl2.size()) << what;
  for (size_t i = 0; i < n.maxl2.size(); ++i) {
    // Grid values are exact in every dtype: the representative and bounds are copies.
    ASSERT_EQ(c.maxl2[i], n.maxl2[i]) << what << " maxl2 element " << i;
    ASSERT_EQ(c.kmin[i], n.kmin[i]) << what << " kmin element " << i;
    ASSERT_EQ(c.kmax[i], n.kmax[i]) << what << " kmax element " << i;
    ASSERT_NEAR(c.mean[i], n.mean[i], 1e-5 * (1 + std::fabs(n.mean[i]))) << what << " mean element " << i;
  }
  for (size_t r = 0; r < n.count.size(); ++r) {
    ASSERT_EQ(c.count[r], n.count[r]) << what << " count of block row " << r;
    double norm2 = 0;
    for (int d = 0; d < n.dim; ++d) norm2 += n.maxl2[r * n.dim + d] * n.maxl2[r * n.dim + d];
    ASSERT_NEAR(c.best_norm2[r], norm2, 1e-6 * norm2) << what << " best_norm2 of block row " << r;
  }
}

void ExpectIdentical(const CoarseBlocks& a, const CoarseBlocks& b, const std::string& what) {
  EXPECT_EQ(a.batch, b.batch) << what;
  EXPECT_EQ(a.heads, b.heads) << what;
  EXPECT_EQ(a.blocks, b.blocks) << what;
  EXPECT_EQ(a.dim, b.dim) << what;
  EXPECT_EQ(a.block_size, b.block_size) << what;
  EXPECT_EQ(a.tokens, b.tokens) << what;
  EXPECT_EQ(a.has_bounds, b.has_bounds) << what;
  // Bitwise: incremental appends must reproduce one-shot coarsening exactly.
  auto same = [](const auto& x, const auto& y) {
    return x.size() == y.size() && std::memcmp(x.data(), y.data(), x.size() * sizeof(x[0])) == 0;
  };
  EXPECT_TRUE(same(a.maxl2, b.maxl2)) << what << ": maxl2";
  EXPECT_TRUE(same(a.mean, b.mean)) << what << ": mean";
  EXPECT_TRUE(same(a.kmin, b.kmin)) << what << ": kmin";
  EXPECT_TRUE(same(a.kmax, b.kmax)) << what << ": kmax";
  EXPECT_TRUE(same(a.best_norm2, b.best_norm2)) << what << ": best_norm2";
  EXPECT_TRUE(same(a.count, b.count)) << what << ": count";
}

// Tokens [begin, end) of x [B, H, N, D] as their own tensor.
OwnedTensor Slice(const OwnedTensor& x, int64_t begin, int64_t end) {
  const int64_t B = x.shape[0], H = x.shape[1], N = x.shape[2], D = x.shape[3];
  std::vector<double> v;
  for (int64_t bh = 0; bh < B * H; ++bh) {
    v.insert(v.end(), x.values.begin() + (bh * N + begin) * D, x.values.begin() + (bh * N + end) * D);
  }
  return test::FromValues({B, H, end - begin, D}, x.dtype, std::move(v));
}

void ExpectInvalid(const absl::Status& s, const std::string& prefix) {
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument) << s;
  EXPECT_TRUE(absl::StartsWith(s.message(), prefix)) << "message '" << s.message() << "' should start with '"
                                                     << prefix << "'";
}

TEST(Coarsen, MatchesNaiveOnManyShapes) {
  uint64_t seed = 1;
  for (const Shape& s : Shapes()) {
    const OwnedTensor x = RandomTensor({s.B, s.H, s.N, s.D}, s.dtype, seed++);
    auto c = CoarsenCpu(x.view(), s.block);
    ASSERT_TRUE(c.ok()) << c.status();
    ExpectMatchesNaive(*c, NaiveCoarsen(x.values, s.B, s.H, s.N, s.D, s.block), x, s.block, Describe(s));
  }
}

TEST(Coarsen, MaxL2TiesGoToTheLowestIndex) {
  // One block of five 2-d tokens; tokens 1, 2 and 4 share the largest norm (5).
  const std::vector<double> v = {1, 1, 3, 4, 4, 3, 0, 2, -5, 0};
  for (DType dt : {DType::kF32, DType::kF16, DType::kBF16}) {
    const OwnedTensor x = test::FromValues({1, 1, 5, 2}, dt, v);
    auto c = CoarsenCpu(x.view(), 8);
    ASSERT_TRUE(c.ok()) << c.status();
    EXPECT_EQ(c->maxl2, (std::vector<float>{3, 4})) << DTypeName(dt);
    // The same when the tied tokens arrive in separate appends.
    CoarseBlocks inc;
    for (int64_t t = 0; t < 5; ++t) ASSERT_TRUE(AppendTokens(inc, Slice(x, t, t + 1).view(), 8).ok());
    EXPECT_EQ(inc.maxl2, (std::vector<float>{3, 4})) << DTypeName(dt);
  }
  EXPECT_EQ(NaiveCoarsen(v, 1, 1, 5, 2, 8).argmax[0], 1);
}

TEST(Coarsen, AppendInRandomChunksEqualsOneShot) {
  std::mt19937 rng(7);
  uint64_t seed = 100;
  for (const Shape& s : Shapes()) {
    const OwnedTensor x = RandomTensor({s.B, s.H, s.N, s.D}, s.dtype, seed++);
    auto one_shot = CoarsenCpu(x.view(), s.block);
    ASSERT_TRUE(one_shot.ok()) << one_shot.status();
    for (int trial = 0; trial < 4; ++trial) {
      CoarseBlocks inc;
      int64_t at = 0;
      std::string chunks;
      while (at < s.N) {
        const int64_t max_chunk = trial == 0 ? 1 : std::max<int64_t>(1, s.N / 3);
        const int64_t n = std::min<int64_t>(s.N - at, std::uniform_int_distribution<int64_t>(1, max_chunk)(rng));
        ASSERT_TRUE(AppendTokens(inc, Slice(x, at, at + n).view(), s.block).ok());
        chunks += std::to_string(n) + " ";
        at += n;
      }
      ExpectIdentical(inc, *one_shot, Describe(s) + " chunks " + chunks);
    }
  }
}

TEST(Coarsen, RepresentativesWithoutBounds) {
  const OwnedTensor reps = RandomTensor({2, 3, 4, 8}, DType::kBF16, 3);
  auto c = CoarseFromRepresentatives(reps.view(), nullptr, nullptr, 16, 50);  // 4 blocks, last has 2 tokens
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_FALSE(c->has_bounds);
  EXPECT_EQ(c->blocks, 4);
  EXPECT_EQ(c->tokens, 50);
  for (size_t i = 0; i < reps.values.size(); ++i) {
    EXPECT_EQ(c->maxl2[i], reps.values[i]);
    EXPECT_EQ(c->mean[i], reps.values[i]);
    EXPECT_EQ(c->kmin[i], reps.values[i]);
    EXPECT_EQ(c->kmax[i], reps.values[i]);
  }
  for (size_t r = 0; r < c->count.size(); ++r) EXPECT_EQ(c->count[r], r % 4 == 3 ? 2 : 16) << r;
}

TEST(Coarsen, RepresentativesWithBounds) {
  const OwnedTensor x = RandomTensor({1, 2, 40, 4}, DType::kF32, 4);
  const NaiveCoarse n = NaiveCoarsen(x.values, 1, 2, 40, 4, 16);
  const OwnedTensor reps = test::FromValues({1, 2, 3, 4}, DType::kF32, n.maxl2);
  const OwnedTensor lo = test::FromValues({1, 2, 3, 4}, DType::kF16, n.kmin);
  const OwnedTensor hi = test::FromValues({1, 2, 3, 4}, DType::kBF16, n.kmax);
  const TensorView lo_view = lo.view(), hi_view = hi.view();
  auto c = CoarseFromRepresentatives(reps.view(), &lo_view, &hi_view, 16, 40);
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_TRUE(c->has_bounds);
  for (size_t i = 0; i < n.kmin.size(); ++i) {
    EXPECT_EQ(c->kmin[i], n.kmin[i]);
    EXPECT_EQ(c->kmax[i], n.kmax[i]);
  }
}

TEST(Coarsen, AppendRepresentativesConcatenatesWholeBlocks) {
  const OwnedTensor x = RandomTensor({2, 2, 80, 8}, DType::kF16, 5);
  auto whole = CoarsenCpu(x.view(), 16);
  auto first = CoarsenCpu(Slice(x, 0, 48).view(), 16);
  auto second = CoarsenCpu(Slice(x, 48, 80).view(), 16);
  ASSERT_TRUE(whole.ok() && first.ok() && second.ok());
  CoarseBlocks state;
  ASSERT_TRUE(AppendRepresentatives(state, *first).ok());
  ASSERT_TRUE(AppendRepresentatives(state, *second).ok());
  ExpectIdentical(state, *whole, "48 + 32 tokens");

  // Keys sent without bounds make the concatenation bound-less too.
  const OwnedTensor reps = RandomTensor({2, 2, 1, 8}, DType::kF32, 6);
  auto more = CoarseFromRepresentatives(reps.view(), nullptr, nullptr, 16, 16);
  ASSERT_TRUE(more.ok());
  ASSERT_TRUE(AppendRepresentatives(state, *more).ok());
  EXPECT_FALSE(state.has_bounds);
  EXPECT_EQ(state.blocks, 6);
  EXPECT_EQ(state.tokens, 96);
}

TEST(Coarsen, MemoryBytesCoversTheArrays) {
  const OwnedTensor x = RandomTensor({1, 2, 100, 16}, DType::kF32, 8);
  auto c = CoarsenCpu(x.view(), 32);
  ASSERT_TRUE(c.ok());
  const size_t payload = 4 * c->maxl2.size() * sizeof(float) + c->count.size() * 8;
  EXPECT_GE(c->MemoryBytes(), payload);
  EXPECT_LT(c->MemoryBytes(), 2 * payload + 1024);
}

TEST(Coarsen, BadInputs) {
  const OwnedTensor x = RandomTensor({1, 2, 10, 4}, DType::kF32, 9);
  TensorView v = x.view();

  ExpectInvalid(CoarsenCpu(v, 0).status(), "block_size");
  ExpectInvalid(CoarsenCpu(v, -3).status(), "block_size");

  TensorView rank3 = v;
  rank3.shape = {2, 10, 4};
  ExpectInvalid(CoarsenCpu(rank3, 4).status(), "x");
  TensorView zero = v;
  zero.shape = {1, 2, 0, 4};
  ExpectInvalid(CoarsenCpu(zero, 4).status(), "x");
  TensorView null_data = v;
  null_data.data = nullptr;
  ExpectInvalid(CoarsenCpu(null_data, 4).status(), "x");
  TensorView overflow = v;
  overflow.shape = {1 << 20, 1 << 20, 1 << 20, 4};
  ExpectInvalid(CoarsenCpu(overflow, 4).status(), "x: shape has too many elements");
  TensorView bad_dtype = v;
  bad_dtype.dtype = static_cast<DType>(7);
  ExpectInvalid(CoarsenCpu(bad_dtype, 4).status(), "x: unknown dtype");

  std::vector<double> nan_values = x.values;
  nan_values[13] = std::nan("");
  ExpectInvalid(CoarsenCpu(test::FromValues(x.shape, DType::kF32, nan_values).view(), 4).status(), "x: element 13");

  // Appends that do not continue the state leave it unchanged.
  auto state = CoarsenCpu(v, 4);
  ASSERT_TRUE(state.ok());
  const CoarseBlocks before = *state;
  ExpectInvalid(AppendTokens(*state, v, 8), "block_size");
  ExpectInvalid(AppendTokens(*state, RandomTensor({1, 3, 2, 4}, DType::kF32, 1).view(), 4), "x");
  ExpectInvalid(AppendTokens(*state, RandomTensor({2, 2, 2, 4}, DType::kF32, 1).view(), 4), "x");
  ExpectInvalid(AppendTokens(*state, RandomTensor({1, 2, 2, 5}, DType::kF32, 1).view(), 4), "x");
  ExpectInvalid(AppendTokens(*state, test::FromValues({1, 2, 1, 4}, DType::kF32, {0, 0, 0, 0, 0, 0, INFINITY, 0}).view(), 4),
                "x: element 6");
  ExpectIdentical(*state, before, "after failed appends");
  CoarseBlocks broken = before;
  broken.mean.pop_back();
  ExpectInvalid(AppendTokens(broken, v, 4), "state");

  // Representatives.
  const OwnedTensor reps = RandomTensor({1, 2, 3, 4}, DType::kF32, 10);
  const TensorView r = reps.view();
  ExpectInvalid(CoarseFromRepresentatives(r, nullptr, nullptr, 0, 40).status(), "block_size");
  ExpectInvalid(CoarseFromRepresentatives(r, nullptr, nullptr, 16, 0).status(), "tokens");
  ExpectInvalid(CoarseFromRepresentatives(r, nullptr, nullptr, 16, 64).status(), "reps");  // 4 blocks, not 3
  ExpectInvalid(CoarseFromRepresentatives(r, nullptr, nullptr, 16, 32).status(), "reps");  // 2 blocks
  ExpectInvalid(CoarseFromRepresentatives(rank3, nullptr, nullptr, 16, 40).status(), "reps");
  ExpectInvalid(CoarseFromRepresentatives(r, &r, nullptr, 16, 40).status(), "kmax");
  ExpectInvalid(CoarseFromRepresentatives(r, nullptr, &r, 16, 40).status(), "kmin");
  const OwnedTensor small = RandomTensor({1, 2, 2, 4}, DType::kF32, 11);
  const TensorView sv = small.view();
  ExpectInvalid(CoarseFromRepresentatives(r, &sv, &r, 16, 40).status(), "kmin");
  ExpectInvalid(CoarseFromRepresentatives(r, &r, &sv, 16, 40).status(), "kmax");
  std::vector<double> lower = reps.values;
  for (double& e : lower) e -= 1;
  const OwnedTensor lo = test::FromValues(reps.shape, DType::kF32, lower);
  const TensorView lov = lo.view();
  ExpectInvalid(CoarseFromRepresentatives(r, &r, &lov, 16, 40).status(), "kmin");  // min above max
  ASSERT_TRUE(CoarseFromRepresentatives(r, &lov, &r, 16, 40).ok());

  // Whole blocks after a partial one, or of another block size / shape.
  auto more = CoarseFromRepresentatives(r, nullptr, nullptr, 16, 48);
  ASSERT_TRUE(more.ok());
  auto partial = CoarseFromRepresentatives(r, nullptr, nullptr, 16, 40);
  ASSERT_TRUE(partial.ok());
  ExpectInvalid(AppendRepresentatives(*partial, *more), "state");
  auto other_block = CoarseFromRepresentatives(r, nullptr, nullptr, 8, 24);
  ASSERT_TRUE(other_block.ok());
  ExpectInvalid(AppendRepresentatives(*more, *other_block), "more");
  auto other_heads = CoarseFromRepresentatives(RandomTensor({1, 1, 3, 4}, DType::kF32, 1).view(), nullptr, nullptr,
                                               16, 48);
  ASSERT_TRUE(other_heads.ok());
  ExpectInvalid(AppendRepresentatives(*more, *other_heads), "more");
  ExpectInvalid(AppendRepresentatives(*more, CoarseBlocks{}), "more");
}

}  // namespace
}  // namespace cab
