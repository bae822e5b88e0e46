// cab_wire tensor codec: round trips through every dtype, and every malformed tensor a client can
// send is INVALID_ARGUMENT naming the field.
#include <cmath>
#include <random>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "wire/tensor_codec.h"

namespace cab::wire {
namespace {

using ::testing::HasSubstr;

std::vector<float> Values(size_t n, uint32_t seed) {
  // Multiples of 1/8 in [-16, 16]: exact in fp16 and bf16, so round trips compare with ==.
  std::mt19937 rng(seed);
  std::vector<float> v(n);
  for (auto& x : v) x = static_cast<float>(static_cast<int>(rng() % 257) - 128) / 8.0f;
  return v;
}

TEST(WireTensor, RoundTripsEveryInputDType) {
  const std::vector<int64_t> shape = {2, 3, 5, 4};
  const std::vector<float> values = Values(120, 1);
  for (cab::DType dt : {cab::DType::kF32, cab::DType::kF16, cab::DType::kBF16}) {
    cab::v1::Tensor t;
    EncodeFloat(dt, shape, values.data(), &t);
    EXPECT_EQ(t.dtype(), ToProtoDType(dt));
    EXPECT_EQ(t.data().size(), 120 * cab::DTypeSize(dt));
    auto view = ViewTensor(t, 4, "q");
    ASSERT_TRUE(view.ok()) << view.status();
    EXPECT_EQ(view->shape, shape);
    EXPECT_EQ(view->dtype, dt);
    for (int64_t i = 0; i < 120; ++i) EXPECT_EQ(view->at(i), values[i]) << cab::DTypeName(dt) << " element " << i;
    auto decoded = DecodeFloat(t, "q");
    ASSERT_TRUE(decoded.ok());
    EXPECT_EQ(decoded->data, values);
  }
}

TEST(WireTensor, Fp16RoundsToNearestEven) {
  // 1 + 2^-11 lies halfway between 1 and the next fp16 (1 + 2^-10): ties go to the even one, 1.
  const float halfway = 1.0f + std::ldexp(1.0f, -11);
  cab::v1::Tensor t;
  EncodeFloat(cab::DType::kF16, {1}, &halfway, &t);
  EXPECT_EQ(ViewTensor(t, 1, "x")->at(0), 1.0f);
}

TEST(WireTensor, IntegerTensorsRoundTrip) {
  const std::vector<int32_t> i32 = {0, -1, 7, 1 << 30};
  const std::vector<int64_t> i64 = {0, -1, int64_t{1} << 40};
  const std::vector<uint8_t> u8 = {0, 255, 3};
  cab::v1::Tensor a, b, c;
  EncodeInt32({2, 2}, i32.data(), &a);
  EncodeInt64({3}, i64.data(), &b);
  EncodeUint8({3}, u8.data(), &c);
  EXPECT_EQ(*DecodeInt32(a, {2, 2}, "a"), i32);
  EXPECT_EQ(*DecodeInt64(b, {3}, "b"), i64);
  EXPECT_EQ(*DecodeUint8(c, {}, "c"), u8);
  // Empty tensors (a mask with no kept blocks) are fine on output.
  cab::v1::Tensor empty;
  EncodeInt32({0}, nullptr, &empty);
  EXPECT_TRUE(DecodeInt32(empty, {0}, "e")->empty());
}

TEST(WireTensor, OutputDecodeNamesTheField) {
  const std::vector<int32_t> v = {1, 2, 3, 4};
  cab::v1::Tensor t;
  EncodeInt32({4}, v.data(), &t);
  auto wrong_shape = DecodeInt32(t, {2, 2}, "mask.kv_indices");
  EXPECT_EQ(wrong_shape.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(wrong_shape.status().message(), HasSubstr("mask.kv_indices.shape"));
  auto wrong_dtype = DecodeInt64(t, {4}, "mask.row_offsets");
  EXPECT_THAT(wrong_dtype.status().message(), HasSubstr("mask.row_offsets.dtype"));
  t.mutable_data()->pop_back();
  EXPECT_THAT(DecodeInt32(t, {4}, "x").status().message(), HasSubstr("x.data"));
}

struct BadCase {
  const char* name;
  std::function<void(cab::v1::Tensor*)> mutate;
  const char* expect;
};

TEST(WireTensor, MalformedInputsAreInvalidArgumentNamingTheField) {
  const std::vector<float> values = Values(24, 2);
  const std::vector<BadCase> cases = {
      {"absent", [](cab::v1::Tensor* t) { t->Clear(); }, "chunk.q: missing"},
      {"no dtype", [](cab::v1::Tensor* t) { t->set_dtype(cab::v1::DTYPE_UNSPECIFIED); }, "chunk.q.dtype"},
      {"output dtype", [](cab::v1::Tensor* t) { t->set_dtype(cab::v1::DTYPE_INT32); }, "chunk.q.dtype"},
      {"unknown dtype", [](cab::v1::Tensor* t) { t->set_dtype(static_cast<cab::v1::DType>(99)); }, "chunk.q.dtype"},
      {"rank", [](cab::v1::Tensor* t) { t->add_shape(1); }, "chunk.q.shape"},
      {"zero dim", [](cab::v1::Tensor* t) { t->set_shape(1, 0); }, "chunk.q.shape[1]"},
      {"negative dim", [](cab::v1::Tensor* t) { t->set_shape(2, -4); }, "chunk.q.shape[2]"},
      {"overflowing product",
       [](cab::v1::Tensor* t) {
         for (int i = 0; i < 4; ++i) t->set_shape(i, int64_t{1} << 62);
       },
       "chunk.q.shape"},
      {"bytes short", [](cab::v1::Tensor* t) { t->mutable_data()->pop_back(); }, "chunk.q.data"},
      {"bytes long", [](cab::v1::Tensor* t) { t->mutable_data()->push_back('x'); }, "chunk.q.data"},
  };
  for (const BadCase& c : cases) {
    cab::v1::Tensor t;
    EncodeFloat(cab::DType::kF32, {1, 2, 3, 4}, values.data(), &t);
    c.mutate(&t);
    auto v = ViewTensor(t, 4, "chunk.q");
    EXPECT_EQ(v.status().code(), absl::StatusCode::kInvalidArgument) << c.name;
    EXPECT_THAT(v.status().message(), HasSubstr(c.expect)) << c.name;
  }
}

TEST(WireTensor, CheckedNumelGuardsOverflow) {
  EXPECT_EQ(*CheckedNumel({2, 3, 4}, "x"), 24);
  EXPECT_FALSE(CheckedNumel({int64_t{1} << 21, int64_t{1} << 21}, "x").ok());  // 2^42 > 2^40
  EXPECT_FALSE(CheckedNumel({INT64_MAX, 2}, "x").ok());
  EXPECT_FALSE(CheckedNumel({3, -1}, "x").ok());
}

}  // namespace
}  // namespace cab::wire
