// MaxL2Representatives (only the max-L2 pick, in the input's dtype) against the naive reference of
// SPEC 1 (grid values: exact norms, exact ties, so the lowest-index rule is exercised) and against
// CoarsenCpu on continuous values (same norm arithmetic, so the same picks); errors as CoarsenCpu's.
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "cab/coarse.h"
#include "gtest/gtest.h"
#include "test_util.h"

namespace cab {
namespace {

using test::NaiveCoarsen;
using test::OwnedTensor;
using test::RandomTensor;

// The bytes of token t of slice s of x.
std::vector<uint8_t> TokenBytes(const OwnedTensor& x, int64_t s, int64_t t) {
  const int64_t N = x.shape[2], D = x.shape[3];
  const size_t esize = DTypeSize(x.dtype);
  const uint8_t* p = x.bytes.data() + ((s * N + t) * D) * esize;
  return std::vector<uint8_t>(p, p + D * esize);
}

TEST(MaxL2Representatives, PicksTheNaiveReferencesTokens) {
  struct Case {
    std::vector<int64_t> shape;
    int block;
    DType dtype;
    int max_k;  // small: many exact norm ties
  };
  const std::vector<Case> cases = {
      {{1, 2, 100, 8}, 16, DType::kF32, 127},   // partial last block (4 tokens)
      {{2, 3, 64, 16}, 64, DType::kBF16, 127},  // one block per slice
      {{1, 1, 33, 4}, 8, DType::kF16, 1},       // values in {-1/64, 0, 1/64}: ties everywhere
      {{1, 4, 130, 128}, 128, DType::kBF16, 3},
      {{1, 1, 5, 8}, 1, DType::kF32, 127},      // block of one token: every token its own rep
  };
  for (const Case& c : cases) {
    SCOPED_TRACE(DTypeName(c.dtype) + " block " + std::to_string(c.block));
    const OwnedTensor x = RandomTensor(c.shape, c.dtype, 7, 1.0 / 64, c.max_k);
    const int B = static_cast<int>(c.shape[0]), H = static_cast<int>(c.shape[1]), D = static_cast<int>(c.shape[3]);
    const int64_t N = c.shape[2];
    const test::NaiveCoarse want = NaiveCoarsen(x.values, B, H, N, D, c.block);
    for (int threads : {1, 3}) {
      auto got = MaxL2Representatives(x.view(), c.block, threads);
      ASSERT_TRUE(got.ok()) << got.status();
      const size_t token_bytes = static_cast<size_t>(D) * DTypeSize(c.dtype);
      ASSERT_EQ(got->size(), static_cast<size_t>(B) * H * want.blocks * token_bytes);
      for (int64_t s = 0; s < B * H; ++s) {
        for (int m = 0; m < want.blocks; ++m) {
          const int64_t row = s * want.blocks + m;
          const std::vector<uint8_t> expect = TokenBytes(x, s, want.argmax[row]);
          const std::vector<uint8_t> have(got->begin() + row * token_bytes, got->begin() + (row + 1) * token_bytes);
          ASSERT_EQ(have, expect) << "slice " << s << " block " << m << " (reference token " << want.argmax[row] << ")";
        }
      }
    }
  }
}

TEST(MaxL2Representatives, EqualsCoarsenCpuOnContinuousValues) {
  // Normal values: norms round, and the pick must still be CoarsenCpu's (same arithmetic).
  const std::vector<int64_t> shape = {2, 2, 300, 64};
  for (DType dtype : {DType::kF32, DType::kBF16, DType::kF16}) {
    std::mt19937_64 rng(11);
    std::normal_distribution<float> normal(0.f, 1.f);
    std::vector<double> v(static_cast<size_t>(test::Numel(shape)));
    for (double& e : v) {
      const float f = normal(rng);
      e = dtype == DType::kF32 ? f : dtype == DType::kBF16 ? BF16ToFloat(FloatToBF16(f)) : HalfToFloat(FloatToHalf(f));
    }
    const OwnedTensor x = test::FromValues(shape, dtype, v);
    auto coarse = CoarsenCpu(x.view(), 32);
    auto got = MaxL2Representatives(x.view(), 32, 2);
    ASSERT_TRUE(coarse.ok() && got.ok());
    ASSERT_EQ(got->size(), coarse->maxl2.size() * DTypeSize(dtype));
    for (size_t i = 0; i < coarse->maxl2.size(); ++i) {
      float f;
      if (dtype == DType::kF32) {
        std::memcpy(&f, got->data() + 4 * i, 4);
      } else {
        uint16_t h;
        std::memcpy(&h, got->data() + 2 * i, 2);
        f = dtype == DType::kBF16 ? BF16ToFloat(h) : HalfToFloat(h);
      }
      ASSERT_EQ(f, coarse->maxl2[i]) << DTypeName(dtype) << " element " << i;
    }
  }
}

TEST(MaxL2Representatives, ErrorsAreCoarsenCpus) {
  OwnedTensor x = RandomTensor({1, 2, 40, 8}, DType::kBF16, 3);
  const uint16_t inf = 0x7f80;
  std::memcpy(x.bytes.data() + 2 * 417, &inf, 2);  // in the second slice
  const absl::Status want = CoarsenCpu(x.view(), 16).status();
  const absl::Status got = MaxL2Representatives(x.view(), 16, 2).status();
  ASSERT_FALSE(want.ok());
  EXPECT_EQ(got, want);
  EXPECT_NE(std::string(got.message()).find("element 417"), std::string::npos) << got;

  const OwnedTensor ok = RandomTensor({1, 1, 8, 4}, DType::kF32, 4);
  EXPECT_EQ(MaxL2Representatives(ok.view(), 0, 1).status(), CoarsenCpu(ok.view(), 0).status());
  const TensorView rank3{ok.bytes.data(), DType::kF32, {1, 8, 4}};
  EXPECT_EQ(MaxL2Representatives(rank3, 4, 1).status(), CoarsenCpu(rank3, 4).status());
}

}  // namespace
}  // namespace cab
