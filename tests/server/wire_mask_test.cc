// cab_wire mask codec: a mask survives encode -> decode in every format; each format's tensors
// agree with a naive reading of the CSR; malformed masks are rejected naming the field.
#include <random>
#include <set>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "wire/mask_codec.h"
#include "wire/tensor_codec.h"

namespace cab::wire {
namespace {

using ::testing::HasSubstr;

// A causal mask over rows [row_begin, row_begin + rows) of `cols` key blocks: the diagonal plus a
// random subset of earlier blocks.
cab::BlockMask RandomMask(int batch, int heads, int row_begin, int rows, int cols, uint32_t seed) {
  std::mt19937 rng(seed);
  cab::BlockMask m;
  m.batch = batch, m.heads = heads, m.row_begin = row_begin, m.rows = rows, m.cols = cols;
  m.row_offsets.push_back(0);
  for (int b = 0; b < batch; ++b)
    for (int h = 0; h < heads; ++h)
      for (int r = 0; r < rows; ++r) {
        const int i = row_begin + r;
        for (int j = 0; j < i; ++j)
          if (rng() % 3 == 0) m.col_indices.push_back(j);
        m.col_indices.push_back(i);
        m.row_offsets.push_back(static_cast<int64_t>(m.col_indices.size()));
      }
  return m;
}

std::set<int> RowSet(const cab::BlockMask& m, int64_t row) {
  return {m.col_indices.begin() + m.row_offsets[row], m.col_indices.begin() + m.row_offsets[row + 1]};
}

void ExpectSameMask(const cab::BlockMask& a, const cab::BlockMask& b) {
  EXPECT_EQ(a.batch, b.batch);
  EXPECT_EQ(a.heads, b.heads);
  EXPECT_EQ(a.row_begin, b.row_begin);
  EXPECT_EQ(a.rows, b.rows);
  EXPECT_EQ(a.cols, b.cols);
  EXPECT_EQ(a.row_offsets, b.row_offsets);
  EXPECT_EQ(a.col_indices, b.col_indices);
}

TEST(WireMask, EveryFormatRoundTrips) {
  const cab::BlockMask m = RandomMask(2, 3, 4, 9, 13, 7);
  for (auto f : {cab::v1::MASK_FORMAT_UNSPECIFIED, cab::v1::MASK_FORMAT_BSR, cab::v1::MASK_FORMAT_BITMAP,
                 cab::v1::MASK_FORMAT_FLEX}) {
    cab::v1::BlockMask wire;
    ASSERT_TRUE(EncodeMask(m, f, true, &wire).ok()) << f;
    EXPECT_EQ(wire.format(), f == cab::v1::MASK_FORMAT_UNSPECIFIED ? cab::v1::MASK_FORMAT_BSR : f);
    EXPECT_DOUBLE_EQ(wire.density(), m.Density(true));
    auto back = DecodeMask(wire);
    ASSERT_TRUE(back.ok()) << back.status();
    ExpectSameMask(m, *back);
  }
}

TEST(WireMask, BitmapAndFlexAgreeWithNaiveReading) {
  const cab::BlockMask m = RandomMask(1, 2, 0, 11, 11, 3);
  cab::v1::BlockMask bitmap, flex;
  ASSERT_TRUE(EncodeMask(m, cab::v1::MASK_FORMAT_BITMAP, true, &bitmap).ok());
  ASSERT_TRUE(EncodeMask(m, cab::v1::MASK_FORMAT_FLEX, true, &flex).ok());
  const int64_t row_bytes = 2;  // ceil(11 / 8)
  auto bits = DecodeUint8(bitmap.bitmap(), {1, 2, 11, row_bytes}, "bitmap");
  ASSERT_TRUE(bits.ok()) << bits.status();
  auto num = DecodeInt32(flex.kv_num_blocks(), {1, 2, 11}, "kv_num_blocks");
  ASSERT_TRUE(num.ok()) << num.status();
  const int64_t max_k = flex.kv_indices().shape(3);
  auto idx = DecodeInt32(flex.kv_indices(), {1, 2, 11, max_k}, "kv_indices");
  ASSERT_TRUE(idx.ok()) << idx.status();
  int64_t widest = 0;
  for (int64_t row = 0; row < 22; ++row) {
    const std::set<int> want = RowSet(m, row);
    widest = std::max<int64_t>(widest, want.size());
    for (int c = 0; c < 11; ++c) {
      const bool bit = ((*bits)[row * row_bytes + c / 8] >> (c % 8)) & 1;
      EXPECT_EQ(bit, want.count(c) == 1) << "row " << row << " col " << c;
    }
    ASSERT_EQ((*num)[row], static_cast<int>(want.size()));
    std::set<int> got((*idx).begin() + row * max_k, (*idx).begin() + row * max_k + (*num)[row]);
    EXPECT_EQ(got, want);
    for (int64_t j = (*num)[row]; j < max_k; ++j) EXPECT_EQ((*idx)[row * max_k + j], 0) << "padding";
  }
  EXPECT_EQ(max_k, widest);
}

TEST(WireMask, DecodeRejectsBrokenMasksNamingTheField) {
  const cab::BlockMask m = RandomMask(1, 1, 0, 4, 4, 1);
  cab::v1::BlockMask good;
  ASSERT_TRUE(EncodeMask(m, cab::v1::MASK_FORMAT_BSR, true, &good).ok());

  cab::v1::BlockMask bad = good;
  bad.set_rows(-1);
  EXPECT_THAT(DecodeMask(bad).status().message(), HasSubstr("mask.rows"));

  bad = good;
  bad.set_rows(5);  // row_offsets no longer has rows + 1 entries
  EXPECT_THAT(DecodeMask(bad).status().message(), HasSubstr("mask.row_offsets"));

  bad = good;
  std::vector<int32_t> cols = *DecodeInt32(good.col_indices(), {}, "c");
  cols.back() = 99;  // out of range
  EncodeInt32({static_cast<int64_t>(cols.size())}, cols.data(), bad.mutable_col_indices());
  EXPECT_FALSE(DecodeMask(bad).ok());

  bad = good;
  bad.set_format(static_cast<cab::v1::MaskFormat>(42));
  EXPECT_THAT(DecodeMask(bad).status().message(), HasSubstr("mask.format"));

  cab::v1::BlockMask flex;
  ASSERT_TRUE(EncodeMask(m, cab::v1::MASK_FORMAT_FLEX, true, &flex).ok());
  flex.mutable_kv_num_blocks()->mutable_data()->pop_back();
  EXPECT_THAT(DecodeMask(flex).status().message(), HasSubstr("mask.kv_num_blocks"));

  EXPECT_FALSE(EncodeMask(m, static_cast<cab::v1::MaskFormat>(9), true, &bad).ok());
}

}  // namespace
}  // namespace cab::wire
