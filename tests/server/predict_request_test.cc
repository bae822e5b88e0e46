// Decoding of PredictRequest and EvictRequest: shapes, modes and limits are checked before any
// compute, with INVALID_ARGUMENT naming the field or RESOURCE_EXHAUSTED naming the flag.
#include "evict_request.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "limits_check.h"
#include "predict_request.h"
#include "wire/tensor_codec.h"

namespace cab::server {
namespace {

using ::testing::HasSubstr;

void Fill(cab::v1::Tensor* t, std::vector<int64_t> shape) {
  int64_t n = 1;
  for (int64_t d : shape) n *= d;
  std::vector<float> v(n);
  for (int64_t i = 0; i < n; ++i) v[i] = static_cast<float>(i % 7) - 3.0f;
  wire::EncodeFloat(cab::DType::kF32, shape, v.data(), t);
}

cab::v1::PredictRequest Full(int64_t n = 64) {
  cab::v1::PredictRequest r;
  r.set_block_size(16);
  Fill(r.mutable_q(), {1, 4, n, 8});
  Fill(r.mutable_k(), {1, 2, n, 8});
  return r;
}

TEST(PredictRequest, FullTensors) {
  auto in = DecodePredictRequest(Full(70), Limits{});
  ASSERT_TRUE(in.ok()) << in.status();
  EXPECT_FALSE(in->representatives);
  EXPECT_EQ(in->tokens, 70);
  EXPECT_EQ(in->blocks, 5);
  EXPECT_EQ(in->params.row_begin, 0);
  EXPECT_EQ(in->params.row_end, 5);
  EXPECT_EQ(in->format, cab::v1::MASK_FORMAT_BSR);
}

TEST(PredictRequest, Representatives) {
  cab::v1::PredictRequest r;
  r.set_block_size(16);
  r.set_tokens(70);
  Fill(r.mutable_q_rep(), {1, 4, 5, 8});
  Fill(r.mutable_k_rep(), {1, 2, 5, 8});
  auto in = DecodePredictRequest(r, Limits{});
  ASSERT_TRUE(in.ok()) << in.status();
  EXPECT_TRUE(in->representatives);
  EXPECT_EQ(in->blocks, 5);
  r.set_tokens(90);  // 6 blocks
  EXPECT_THAT(DecodePredictRequest(r, Limits{}).status().message(), HasSubstr("q_rep.shape[2]"));
  r.set_tokens(70);
  Fill(r.mutable_k_min(), {1, 2, 5, 8});
  EXPECT_THAT(DecodePredictRequest(r, Limits{}).status().message(), HasSubstr("k_max: missing"));
}

TEST(PredictRequest, BadRequestsNameTheField) {
  struct Case {
    std::function<void(cab::v1::PredictRequest*)> set;
    const char* field;
  };
  const std::vector<Case> cases = {
      {[](auto* r) { r->set_block_size(0); }, "block_size"},
      {[](auto* r) { r->clear_k(); }, "k: missing"},
      {[](auto* r) { r->clear_q(); r->clear_k(); }, "q: missing"},
      {[](auto* r) { Fill(r->mutable_k(), {2, 2, 64, 8}); }, "k.shape[0]"},
      {[](auto* r) { Fill(r->mutable_k(), {1, 3, 64, 8}); }, "k.shape[1]"},
      {[](auto* r) { Fill(r->mutable_k(), {1, 2, 63, 8}); }, "k.shape[2]"},
      {[](auto* r) { Fill(r->mutable_k(), {1, 2, 64, 4}); }, "k.shape[3]"},
      {[](auto* r) { Fill(r->mutable_q_rep(), {1, 4, 4, 8}); }, "q_rep"},
      {[](auto* r) { r->set_tokens(5); }, "tokens"},
      {[](auto* r) { r->set_format(static_cast<cab::v1::MaskFormat>(7)); }, "format"},
      {[](auto* r) { r->mutable_params()->set_sparsity(2); }, "params.sparsity"},
      {[](auto* r) { r->set_row_begin(4); }, "row_begin"},
      {[](auto* r) { r->set_row_end(9); }, "row_end"},
  };
  for (const Case& c : cases) {
    cab::v1::PredictRequest r = Full();
    c.set(&r);
    auto in = DecodePredictRequest(r, Limits{});
    EXPECT_EQ(in.status().code(), absl::StatusCode::kInvalidArgument) << c.field << ": " << in.status();
    EXPECT_THAT(in.status().message(), HasSubstr(c.field));
  }
}

TEST(PredictRequest, LimitsAreResourceExhaustedNamingTheFlag) {
  struct Case {
    std::function<void(Limits*)> set;
    const char* flag;
  };
  const std::vector<Case> cases = {
      {[](auto* l) { l->max_heads = 2; }, "--max_heads=2"},
      {[](auto* l) { l->max_head_dim = 4; }, "--max_head_dim=4"},
      {[](auto* l) { l->max_tokens = 63; }, "--max_tokens=63"},
      {[](auto* l) { l->max_blocks = 3; }, "--max_blocks=3"},
  };
  for (const Case& c : cases) {
    Limits l;
    c.set(&l);
    auto in = DecodePredictRequest(Full(), l);
    EXPECT_EQ(in.status().code(), absl::StatusCode::kResourceExhausted) << c.flag;
    EXPECT_THAT(in.status().message(), HasSubstr(c.flag));
  }
}

TEST(SequenceLimits, NoOverflowOnHostileShapes) {
  Limits l;
  SequenceShape s{int64_t{1} << 40, 1, int64_t{1} << 40, 1, 16};
  EXPECT_EQ(CheckSequenceLimits(s, l, "x").code(), absl::StatusCode::kResourceExhausted);
  l.max_tokens = INT64_MAX;
  EXPECT_EQ(CheckSequenceLimits(s, l, "x").code(), absl::StatusCode::kResourceExhausted) << "blocks still bound it";
}

TEST(EvictRequest, DecodesAndBoundsTheAnswer) {
  cab::v1::EvictRequest r;
  r.set_policy(cab::v1::EVICT_POLICY_H2O);
  r.set_keep(8);
  Fill(r.mutable_scores(), {1, 2, 100});
  EvictDecoded d;
  ASSERT_TRUE(DecodeEvictRequest(r, Limits{}, &d).ok());
  ASSERT_NE(d.inputs.scores, nullptr);
  EXPECT_EQ(d.inputs.scores->shape, (std::vector<int64_t>{1, 2, 100}));
  EXPECT_EQ(d.inputs.keys, nullptr);

  Fill(r.mutable_keys(), {1, 2, 100});  // rank 3 instead of 4
  EXPECT_THAT(DecodeEvictRequest(r, Limits{}, &d).message(), HasSubstr("keys.shape"));

  cab::v1::EvictRequest streaming;
  streaming.set_policy(cab::v1::EVICT_POLICY_STREAMING);
  streaming.set_keep(int64_t{1} << 40);
  streaming.set_tokens(1 << 20);
  streaming.set_batch(1);
  streaming.set_kv_heads(256);
  Limits l;
  l.max_message_bytes = 1 << 20;
  auto s = DecodeEvictRequest(streaming, l, &d);
  EXPECT_EQ(s.code(), absl::StatusCode::kResourceExhausted);
  EXPECT_THAT(s.message(), HasSubstr("--max_message_bytes"));
  cab::v1::EvictRequest snap;
  snap.set_policy(cab::v1::EVICT_POLICY_SNAPKV);
  snap.set_keep(8);
  Fill(snap.mutable_keys(), {1, 1, 5000, 1});
  Fill(snap.mutable_window(), {1, 1, kMaxEvictWindow + 1, 1});
  auto w = DecodeEvictRequest(snap, Limits{}, &d);
  EXPECT_EQ(w.code(), absl::StatusCode::kResourceExhausted);
  EXPECT_THAT(w.message(), HasSubstr("window.shape[2]"));
  streaming.set_tokens(-1);
  EXPECT_THAT(DecodeEvictRequest(streaming, l, &d).message(), HasSubstr("tokens"));
}

}  // namespace
}  // namespace cab::server
