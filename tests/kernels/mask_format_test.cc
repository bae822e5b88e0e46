// BlockMask formats (SPEC 3): CSR <-> bitmap <-> FlexAttention round trips on random masks, each
// layout checked bit by bit against membership, density against a naive count, and every broken
// invariant rejected with a message naming the field.
#include <random>
#include <set>

#include "cab/mask.h"
#include "gtest/gtest.h"

namespace cab {
namespace {

// A random valid mask: each (b, h, row) keeps a random subset of its candidates.
BlockMask RandomMask(int batch, int heads, int row_begin, int rows, int cols, bool causal, uint64_t seed) {
  std::mt19937_64 rng(seed);
  BlockMask m;
  m.batch = batch, m.heads = heads, m.row_begin = row_begin, m.rows = rows, m.cols = cols;
  m.row_offsets.push_back(0);
  for (int r = 0; r < batch * heads * rows; ++r) {
    const int row = row_begin + r % rows;
    const int n = causal ? std::min(row + 1, cols) : cols;
    const double keep = std::uniform_real_distribution<double>(0, 1)(rng);
    for (int c = 0; c < n; ++c) {
      if (std::uniform_real_distribution<double>(0, 1)(rng) < keep) m.col_indices.push_back(c);
    }
    m.row_offsets.push_back(static_cast<int64_t>(m.col_indices.size()));
  }
  return m;
}

bool Member(const BlockMask& m, int64_t r, int c) {
  for (int64_t e = m.row_offsets[r]; e < m.row_offsets[r + 1]; ++e) {
    if (m.col_indices[e] == c) return true;
  }
  return false;
}

TEST(MaskFormat, RoundTripsAndLayouts) {
  int seed = 0;
  for (int cols : {1, 7, 8, 9, 33, 64}) {
    for (bool causal : {true, false}) {
      for (int row_begin : {0, cols / 2}) {
        const int rows = cols - row_begin;
        const BlockMask m = RandomMask(2, 3, row_begin, rows, cols, causal, ++seed);
        ASSERT_TRUE(m.Check(causal).ok()) << m.Check(causal);
        const int64_t total = 2 * 3 * rows;

        const BitmapMask bits = ToBitmap(m);
        ASSERT_EQ(static_cast<int64_t>(bits.bits.size()), total * ((cols + 7) / 8));
        for (int64_t r = 0; r < total; ++r) {
          for (int c = 0; c < cols; ++c) {
            const bool bit = (bits.bits[r * ((cols + 7) / 8) + c / 8] >> (c % 8)) & 1;
            ASSERT_EQ(bit, Member(m, r, c)) << "row " << r << " col " << c;
          }
        }

        const FlexMask flex = ToFlex(m);
        int max_k = 0;
        for (int64_t r = 0; r < total; ++r) max_k = std::max<int>(max_k, m.row_offsets[r + 1] - m.row_offsets[r]);
        ASSERT_EQ(flex.max_k, max_k);
        for (int64_t r = 0; r < total; ++r) {
          const int count = flex.kv_num_blocks[r];
          ASSERT_EQ(count, m.row_offsets[r + 1] - m.row_offsets[r]);
          for (int e = 0; e < max_k; ++e) {
            const int32_t v = flex.kv_indices[r * max_k + e];
            if (e < count) {
              ASSERT_EQ(v, m.col_indices[m.row_offsets[r] + e]);
            } else {
              ASSERT_EQ(v, 0) << "padding";
            }
          }
        }

        auto from_bits = FromBitmap(bits);
        auto from_flex = FromFlex(flex);
        ASSERT_TRUE(from_bits.ok()) << from_bits.status();
        ASSERT_TRUE(from_flex.ok()) << from_flex.status();
        for (const BlockMask* back : {&*from_bits, &*from_flex}) {
          EXPECT_EQ(back->row_offsets, m.row_offsets);
          EXPECT_EQ(back->col_indices, m.col_indices);
          EXPECT_EQ(back->row_begin, row_begin);
          EXPECT_EQ(back->rows, rows);
          EXPECT_EQ(back->cols, cols);
        }
        // bitmap -> flex -> bitmap through CSR
        auto via = FromFlex(ToFlex(*from_bits));
        ASSERT_TRUE(via.ok());
        EXPECT_EQ(ToBitmap(*via).bits, bits.bits);
      }
    }
  }
}

TEST(MaskFormat, DensityCountsCandidatePairs) {
  const BlockMask m = RandomMask(2, 2, 3, 5, 10, true, 99);
  double pairs = 0;
  for (int b = 0; b < 2 * 2; ++b) {
    for (int row = 3; row < 8; ++row) pairs += row + 1;
  }
  EXPECT_DOUBLE_EQ(m.Density(true), m.kept() / pairs);
  EXPECT_DOUBLE_EQ(m.Density(false), m.kept() / (4.0 * 5 * 10));
  BlockMask empty;
  EXPECT_EQ(empty.Density(true), 0.0);
}

void ExpectError(const absl::Status& s, const std::string& field) {
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument) << s;
  EXPECT_NE(s.message().find(field), std::string::npos) << "'" << s.message() << "' should name " << field;
}

TEST(MaskFormat, CheckNamesTheBrokenInvariant) {
  const BlockMask good = RandomMask(1, 2, 0, 6, 6, true, 5);
  {
    BlockMask m = good;
    m.row_offsets.pop_back();
    ExpectError(m.Check(true), "mask.row_offsets");
  }
  {
    BlockMask m = good;
    m.col_indices.push_back(0);
    ExpectError(m.Check(true), "mask.row_offsets");
  }
  {
    BlockMask m;
    m.batch = 1, m.heads = 1, m.rows = 1, m.cols = 4;
    m.row_offsets = {0, 2};
    m.col_indices = {2, 1};
    ExpectError(m.Check(false), "mask.col_indices");  // not ascending
    m.col_indices = {1, 4};
    ExpectError(m.Check(false), "mask.col_indices");  // out of range
    m.col_indices = {0, 1};
    EXPECT_TRUE(m.Check(false).ok());
    ExpectError(m.Check(true), "mask.col_indices");  // block 1 after query block 0
  }
  {
    BlockMask m = good;
    m.cols = -1;
    ExpectError(m.Check(true), "mask");
  }
}

TEST(MaskFormat, FromBitmapAndFlexRejectBadLayouts) {
  const BlockMask good = RandomMask(1, 1, 0, 4, 10, true, 8);
  BitmapMask bits = ToBitmap(good);
  bits.bits.pop_back();
  ExpectError(FromBitmap(bits).status(), "bitmap");
  bits = ToBitmap(good);
  bits.bits[1] |= 0x80;  // column 15 of row 0, beyond cols = 10
  ExpectError(FromBitmap(bits).status(), "bitmap");

  FlexMask flex = ToFlex(good);
  flex.kv_num_blocks.pop_back();
  ExpectError(FromFlex(flex).status(), "flex.kv_num_blocks");
  flex = ToFlex(good);
  flex.kv_indices.push_back(0);
  ExpectError(FromFlex(flex).status(), "flex.kv_indices");
  flex = ToFlex(good);
  flex.kv_num_blocks[0] = flex.max_k + 1;
  ExpectError(FromFlex(flex).status(), "flex.kv_num_blocks");
  flex = ToFlex(good);
  flex.kv_num_blocks[3] = 2;
  flex.kv_indices[3 * flex.max_k] = 3;
  flex.kv_indices[3 * flex.max_k + 1] = 1;
  ExpectError(FromFlex(flex).status(), "flex.kv_indices");  // not ascending
  flex.kv_indices[3 * flex.max_k + 1] = 10;
  ExpectError(FromFlex(flex).status(), "flex.kv_indices");  // out of range
  flex.max_k = -1;
  ExpectError(FromFlex(flex).status(), "flex.max_k");
}

}  // namespace
}  // namespace cab
