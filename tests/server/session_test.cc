// A session's chunk handling: chunks in order give the same coarse state and masks as one-shot
// coarsening of the whole sequence; out-of-order, misshapen or over-limit chunks fail with the
// field named and leave the state as it was.
#include <random>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "session.h"
#include "wire/mask_codec.h"
#include "wire/tensor_codec.h"

namespace cab::server {
namespace {

using ::testing::HasSubstr;

constexpr int kB = 1, kH = 4, kHkv = 2, kD = 16, kBs = 16;

cab::FloatTensor Random(std::vector<int64_t> shape, uint32_t seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> n;
  cab::FloatTensor t;
  t.shape = shape;
  int64_t count = 1;
  for (int64_t d : shape) count *= d;
  t.data.resize(count);
  for (auto& x : t.data) x = n(rng);
  return t;
}

// Tokens [start, start + n) of x [B, H, N, D].
cab::FloatTensor Slice(const cab::FloatTensor& x, int64_t start, int64_t n) {
  cab::FloatTensor out;
  out.shape = {x.shape[0], x.shape[1], n, x.shape[3]};
  const int64_t N = x.shape[2], D = x.shape[3];
  for (int64_t bh = 0; bh < x.shape[0] * x.shape[1]; ++bh)
    for (int64_t t = start; t < start + n; ++t)
      out.data.insert(out.data.end(), x.data.begin() + (bh * N + t) * D, x.data.begin() + (bh * N + t + 1) * D);
  return out;
}

cab::v1::Chunk MakeChunk(int layer, int64_t start, const cab::FloatTensor& q, const cab::FloatTensor& k) {
  cab::v1::Chunk c;
  c.set_layer(layer);
  c.set_start(start);
  c.set_tokens(q.shape[2]);
  wire::EncodeFloat(cab::DType::kF32, q.shape, q.data.data(), c.mutable_q());
  wire::EncodeFloat(cab::DType::kF32, k.shape, k.data.data(), c.mutable_k());
  return c;
}

wire::SessionSpec Spec(bool representatives = false) {
  cab::v1::SessionConfig c;
  c.set_layers(2);
  c.set_heads(kH);
  c.set_kv_heads(kHkv);
  c.set_head_dim(kD);
  c.set_block_size(kBs);
  c.set_representatives(representatives);
  c.mutable_params()->set_sparsity(0.5f);
  c.mutable_params()->set_graph_degree(4);
  return *wire::ToSessionSpec(c);
}

auto AllowAll() {
  return [](int64_t) { return absl::OkStatus(); };
}

TEST(Session, ChunksInOrderMatchOneShotCoarseningAndMask) {
  const int64_t N = 200;  // 13 blocks, the last partial; chunks split blocks on purpose
  const cab::FloatTensor q = Random({kB, kH, N, kD}, 1), k = Random({kB, kHkv, N, kD}, 2);
  Limits limits;
  Session s(Spec(), limits);
  int64_t start = 0;
  for (int64_t n : {7, 33, 16, 100, 44}) {
    auto ack = s.Append(MakeChunk(0, start, Slice(q, start, n), Slice(k, start, n)), AllowAll(), {});
    ASSERT_TRUE(ack.ok()) << ack.status();
    start += n;
    EXPECT_EQ(ack->tokens(), start);
    EXPECT_EQ(ack->session_bytes(), s.MemoryBytes());
  }
  ASSERT_EQ(start, N);
  EXPECT_EQ(s.tokens(0), N);
  EXPECT_EQ(s.tokens(1), 0) << "layers are independent";

  auto backend = cab::MakeCpuBackend({1});
  auto qc = cab::CoarsenCpu(q.view(), kBs);
  auto kc = cab::CoarsenCpu(k.view(), kBs);
  ASSERT_TRUE(qc.ok() && kc.ok());
  cab::MaskParams p = Spec().params;
  p.row_begin = 2;
  p.row_end = 11;
  auto want = backend->PredictMask(*qc, *kc, p, false);
  ASSERT_TRUE(want.ok()) << want.status();

  cab::v1::MaskQuery query;
  query.set_layer(0);
  query.set_row_begin(2);
  query.set_row_end(11);
  query.set_request_id(42);
  cab::v1::MaskReply reply;
  ASSERT_TRUE(s.Query(query, *backend, {}, &reply).ok());
  EXPECT_EQ(reply.request_id(), 42u);
  auto got = wire::DecodeMask(reply.mask());
  ASSERT_TRUE(got.ok()) << got.status();
  EXPECT_EQ(got->row_begin, 2);
  EXPECT_EQ(got->rows, 9);
  EXPECT_EQ(got->row_offsets, want->mask.row_offsets);
  EXPECT_EQ(got->col_indices, want->mask.col_indices);
}

TEST(Session, RejectsOutOfOrderAndMisshapenChunksNamingTheField) {
  const cab::FloatTensor q = Random({kB, kH, 32, kD}, 3), k = Random({kB, kHkv, 32, kD}, 4);
  Session s(Spec(), Limits{});
  ASSERT_TRUE(s.Append(MakeChunk(0, 0, Slice(q, 0, 16), Slice(k, 0, 16)), AllowAll(), {}).ok());
  const int64_t bytes = s.MemoryBytes();

  auto gap = s.Append(MakeChunk(0, 20, Slice(q, 16, 16), Slice(k, 16, 16)), AllowAll(), {});
  EXPECT_EQ(gap.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(gap.status().message(), HasSubstr("chunk.start"));

  auto layer = s.Append(MakeChunk(2, 0, q, k), AllowAll(), {});
  EXPECT_EQ(layer.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(layer.status().message(), HasSubstr("chunk.layer"));

  auto heads = s.Append(MakeChunk(0, 16, Slice(k, 16, 16), Slice(k, 16, 16)), AllowAll(), {});
  EXPECT_THAT(heads.status().message(), HasSubstr("chunk.q.shape[1]"));

  cab::v1::Chunk wrong_tokens = MakeChunk(0, 16, Slice(q, 16, 16), Slice(k, 16, 16));
  wrong_tokens.set_tokens(15);
  EXPECT_THAT(s.Append(wrong_tokens, AllowAll(), {}).status().message(), HasSubstr("chunk.q.shape[2]"));

  cab::v1::Chunk missing_k = MakeChunk(0, 16, Slice(q, 16, 16), Slice(k, 16, 16));
  missing_k.clear_k();
  EXPECT_THAT(s.Append(missing_k, AllowAll(), {}).status().message(), HasSubstr("chunk.k"));

  EXPECT_EQ(s.tokens(0), 16) << "failed chunks leave the state alone";
  EXPECT_EQ(s.MemoryBytes(), bytes);
}

TEST(Session, MemoryRefusalLeavesStateUnchanged) {
  const cab::FloatTensor q = Random({kB, kH, 64, kD}, 5), k = Random({kB, kHkv, 64, kD}, 6);
  Session s(Spec(), Limits{});
  ASSERT_TRUE(s.Append(MakeChunk(0, 0, Slice(q, 0, 16), Slice(k, 0, 16)), AllowAll(), {}).ok());
  int64_t asked = 0;
  auto refuse = [&](int64_t total) {
    asked = total;
    return absl::ResourceExhaustedError("session: over --max_session_bytes");
  };
  auto r = s.Append(MakeChunk(0, 16, Slice(q, 16, 48), Slice(k, 16, 48)), refuse, {});
  EXPECT_EQ(r.status().code(), absl::StatusCode::kResourceExhausted);
  EXPECT_GT(asked, s.MemoryBytes()) << "the reservation covers the grown state";
  EXPECT_EQ(s.tokens(0), 16);
}

TEST(Session, TokenLimitIsResourceExhausted) {
  Limits limits;
  limits.max_tokens = 40;
  const cab::FloatTensor q = Random({kB, kH, 48, kD}, 7), k = Random({kB, kHkv, 48, kD}, 8);
  Session s(Spec(), limits);
  ASSERT_TRUE(s.Append(MakeChunk(0, 0, Slice(q, 0, 32), Slice(k, 0, 32)), AllowAll(), {}).ok());
  auto r = s.Append(MakeChunk(0, 32, Slice(q, 32, 16), Slice(k, 32, 16)), AllowAll(), {});
  EXPECT_EQ(r.status().code(), absl::StatusCode::kResourceExhausted);
  EXPECT_THAT(r.status().message(), HasSubstr("--max_tokens=40"));
}

TEST(Session, RepresentativesFollowWholeBlocksOnly) {
  Session s(Spec(true), Limits{});
  // 2 blocks covering 20 tokens: the second block is partial.
  const cab::FloatTensor q = Random({kB, kH, 2, kD}, 9), k = Random({kB, kHkv, 2, kD}, 10);
  cab::v1::Chunk c = MakeChunk(0, 0, q, k);
  c.set_tokens(20);
  ASSERT_TRUE(s.Append(c, AllowAll(), {}).ok());
  EXPECT_EQ(s.tokens(0), 20);
  c.set_start(20);
  auto r = s.Append(c, AllowAll(), {});
  EXPECT_EQ(r.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(r.status().message(), HasSubstr("chunk.start"));
}

TEST(Session, QueryChecks) {
  Session s(Spec(), Limits{});
  cab::v1::MaskQuery q;
  q.set_layer(0);
  EXPECT_EQ(s.CheckQuery(q).code(), absl::StatusCode::kFailedPrecondition) << "no tokens yet";
  q.set_layer(5);
  EXPECT_THAT(s.CheckQuery(q).message(), HasSubstr("query.layer"));
  const cab::FloatTensor qt = Random({kB, kH, 32, kD}, 11), kt = Random({kB, kHkv, 32, kD}, 12);
  ASSERT_TRUE(s.Append(MakeChunk(0, 0, qt, kt), AllowAll(), {}).ok());
  q.set_layer(0);
  q.set_row_begin(2);
  EXPECT_THAT(s.CheckQuery(q).message(), HasSubstr("query.row_begin"));
}

}  // namespace
}  // namespace cab::server
