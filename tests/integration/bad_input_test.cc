// Every bad input a caller can send gets its status code and a message naming the field, and the
// same server answers the next request correctly (the error hurt nobody else).
#include <functional>

#include "gtest/gtest.h"
#include "problem.h"
#include "rpc_helpers.h"
#include "stream_helpers.h"

namespace cab_it {
namespace {

// The status message names at least one of `fields` (several spellings are accepted per case).
void ExpectNamesOneOf(const grpc::Status& s, const std::vector<std::string>& fields) {
  bool named = false;
  for (const auto& f : fields) named = named || NamesField(s.error_message(), f);
  EXPECT_TRUE(named) << "message does not name the field: " << s.error_message();
}

using grpc::StatusCode;

struct PredictCase {
  const char* name;
  std::function<void(cab::v1::PredictRequest&)> mutate;
  std::vector<std::string> fields;  // the message must name one of these
};

std::vector<PredictCase> PredictCases() {
  return {
      {"q bytes shorter than its shape", [](auto& r) { r.mutable_q()->mutable_data()->resize(r.q().data().size() - 2); }, {"q"}},
      {"k bytes longer than its shape", [](auto& r) { r.mutable_k()->mutable_data()->append("xxxx"); }, {"k"}},
      {"q rank 3", [](auto& r) { r.mutable_q()->mutable_shape()->RemoveLast(); }, {"q"}},
      {"k dtype unspecified", [](auto& r) { r.mutable_k()->set_dtype(cab::v1::DTYPE_UNSPECIFIED); }, {"k"}},
      {"q dtype int32 (output only)", [](auto& r) { r.mutable_q()->set_dtype(cab::v1::DTYPE_INT32); }, {"q"}},
      {"k head_dim differs from q", [](auto& r) {
         r.mutable_k()->set_shape(3, 16);
         r.mutable_k()->mutable_data()->resize(r.k().data().size() / 2);
       }, {"k", "q", "head_dim"}},
      {"k tokens differ from q", [](auto& r) {
         r.mutable_k()->set_shape(2, 500);
         r.mutable_k()->mutable_data()->resize(r.k().data().size() / 2);
       }, {"k", "q", "tokens"}},
      {"heads not a multiple of kv heads", [](auto& r) {
         r.mutable_q()->set_shape(1, 3);
         r.mutable_q()->mutable_data()->resize(r.q().data().size() / 4 * 3);
       }, {"q", "k", "heads", "kv_heads"}},
      {"no q and no q_rep", [](auto& r) { r.clear_q(); }, {"q", "q_rep"}},
      {"negative dimension", [](auto& r) { r.mutable_q()->set_shape(2, -1000); }, {"q"}},
      {"zero dimension", [](auto& r) { r.mutable_k()->set_shape(1, 0); }, {"k"}},
      {"shape product overflows int64", [](auto& r) {
         for (int i = 0; i < 4; ++i) r.mutable_q()->set_shape(i, int64_t{1} << 40);
       }, {"q"}},
      {"shape product wraps to the right byte count", [](auto& r) {
         // 2^62 * 2^2 elements * 4 bytes wraps to 0 in 64-bit arithmetic; must not be accepted.
         r.mutable_q()->set_shape(0, int64_t{1} << 62);
         r.mutable_q()->set_shape(1, 4);
         r.mutable_q()->set_shape(2, 1);
         r.mutable_q()->set_shape(3, 1);
         r.mutable_q()->clear_data();
       }, {"q"}},
      {"block_size 0", [](auto& r) { r.set_block_size(0); }, {"block_size"}},
      {"block_size 8 (below 16)", [](auto& r) { r.set_block_size(8); }, {"block_size"}},
      {"block_size 4096 (above 1024)", [](auto& r) { r.set_block_size(4096); }, {"block_size"}},
      {"sparsity 1", [](auto& r) { r.mutable_params()->set_sparsity(1.f); }, {"sparsity", "params.sparsity"}},
      {"sparsity -0.1", [](auto& r) { r.mutable_params()->set_sparsity(-0.1f); }, {"sparsity", "params.sparsity"}},
      {"cab shares do not sum to 1", [](auto& r) {
         r.mutable_params()->set_local_ratio(0.5f);
         r.mutable_params()->set_bridge_ratio(0.5f);
         r.mutable_params()->set_importance_ratio(0.5f);
       }, {"local_ratio", "bridge_ratio", "importance_ratio"}},
      {"graph_degree 0", [](auto& r) { r.mutable_params()->set_graph_degree(0); }, {"graph_degree", "degree"}},
      {"negative blocks_per_row", [](auto& r) { r.mutable_params()->set_blocks_per_row(-2); }, {"blocks_per_row"}},
      {"negative min_keep", [](auto& r) { r.mutable_params()->set_min_keep(-1); }, {"min_keep"}},
      {"policy outside the enum", [](auto& r) { r.mutable_params()->set_policy(static_cast<cab::v1::MaskPolicy>(99)); }, {"policy"}},
      {"estimator outside the enum", [](auto& r) { r.mutable_params()->set_estimator(static_cast<cab::v1::Estimator>(42)); }, {"estimator"}},
      {"format outside the enum", [](auto& r) { r.set_format(static_cast<cab::v1::MaskFormat>(17)); }, {"format"}},
      {"row_begin past the last block", [](auto& r) { r.set_row_begin(40); }, {"row_begin"}},
      {"row_end before row_begin", [](auto& r) {
         r.set_row_begin(10);
         r.set_row_end(5);
       }, {"row_end", "row_begin"}},
      {"negative row_begin", [](auto& r) { r.set_row_begin(-1); }, {"row_begin"}},
  };
}

using BadInputTest = ServerTest;

TEST_F(BadInputTest, PredictBadInputIsInvalidArgumentNamingTheField) {
  const Problem pb = MakeProblem(ProblemShape{});
  for (const PredictCase& c : PredictCases()) {
    SCOPED_TRACE(c.name);
    cab::v1::PredictRequest req = FullRequest(pb, TestMaskParams{}, cab::v1::MASK_FORMAT_BSR);
    c.mutate(req);
    cab::v1::PredictResponse resp;
    auto ctx = Context();
    const grpc::Status s = stub_->Predict(ctx.get(), req, &resp);
    EXPECT_EQ(s.error_code(), StatusCode::INVALID_ARGUMENT) << Describe(s);
    ExpectNamesOneOf(s, c.fields);
    ExpectServerHealthy();
  }
}

TEST_F(BadInputTest, RepresentativesBadInput) {
  const Problem pb = MakeProblem(ProblemShape{});
  struct Case {
    const char* name;
    std::function<void(cab::v1::PredictRequest&)> mutate;
    std::vector<std::string> fields;
  };
  const std::vector<Case> cases = {
      {"tokens 0", [](auto& r) { r.set_tokens(0); }, {"tokens"}},
      {"tokens imply more blocks than sent", [](auto& r) { r.set_tokens(r.tokens() + 64); }, {"tokens", "q_rep", "k_rep"}},
      {"k_rep bytes short", [](auto& r) { r.mutable_k_rep()->mutable_data()->resize(10); }, {"k_rep"}},
      {"k_min shape differs from k_rep", [](auto& r) {
         r.mutable_k_min()->set_shape(2, 3);
         r.mutable_k_min()->mutable_data()->resize(r.k_min().data().size() / 32 * 3);
       }, {"k_min"}},
      {"quest estimator with k_min but no k_max", [](auto& r) { r.clear_k_max(); }, {"k_max", "k_min"}},
      {"q and q_rep both sent", [&](auto& r) { *r.mutable_q() = ToWire(pb.q, cab::DType::kF32); }, {"q", "q_rep"}},
  };
  for (const Case& c : cases) {
    SCOPED_TRACE(c.name);
    cab::v1::PredictRequest req = RepresentativesRequest(pb, TestMaskParams{}, cab::v1::MASK_FORMAT_BSR);
    c.mutate(req);
    cab::v1::PredictResponse resp;
    auto ctx = Context();
    const grpc::Status s = stub_->Predict(ctx.get(), req, &resp);
    EXPECT_EQ(s.error_code(), StatusCode::INVALID_ARGUMENT) << Describe(s);
    ExpectNamesOneOf(s, c.fields);
    ExpectServerHealthy();
  }
}

TEST_F(BadInputTest, EvictBadInput) {
  const HostTensor scores = RandomTokens({1, 2, 100}, 1);
  const HostTensor keys = RandomTokens({1, 2, 100, 16}, 2);
  struct Case {
    const char* name;
    std::function<void(cab::v1::EvictRequest&)> mutate;
    std::vector<std::string> fields;
  };
  const std::vector<Case> cases = {
      {"negative keep", [](auto& r) { r.set_keep(-1); }, {"keep"}},
      {"scores bytes short", [](auto& r) { r.mutable_scores()->mutable_data()->resize(12); }, {"scores"}},
      {"h2o without scores", [](auto& r) {
         r.set_policy(cab::v1::EVICT_POLICY_H2O);
         r.clear_scores();
       }, {"scores"}},
      {"snapkv without window", [](auto& r) { r.set_policy(cab::v1::EVICT_POLICY_SNAPKV); }, {"window"}},
      {"keys tokens differ from scores", [](auto& r) {
         r.mutable_keys()->set_shape(2, 50);
         r.mutable_keys()->mutable_data()->resize(r.keys().data().size() / 2);
       }, {"keys", "scores", "tokens"}},
      {"policy outside the enum", [](auto& r) { r.set_policy(static_cast<cab::v1::EvictPolicy>(77)); }, {"policy"}},
      {"block_size 0", [](auto& r) { r.set_block_size(0); }, {"block_size"}},
  };
  for (const Case& c : cases) {
    SCOPED_TRACE(c.name);
    cab::v1::EvictRequest req;
    req.set_policy(cab::v1::EVICT_POLICY_CAB);
    req.set_keep(20);
    *req.mutable_scores() = ToWire(scores, cab::DType::kF32);
    *req.mutable_keys() = ToWire(keys, cab::DType::kF32);
    c.mutate(req);
    cab::v1::EvictResponse resp;
    auto ctx = Context();
    const grpc::Status s = stub_->Evict(ctx.get(), req, &resp);
    EXPECT_EQ(s.error_code(), StatusCode::INVALID_ARGUMENT) << Describe(s);
    ExpectNamesOneOf(s, c.fields);
    ExpectServerHealthy();
  }
}

// Stream errors: the stream ends with the code, the message names the field, the session is closed
// (reason "error") and the server keeps serving.
struct StreamCase {
  const char* name;
  // Drives one stream into the error; returns the final status.
  std::function<grpc::Status(StreamClient&, const Problem&)> run;
  std::vector<std::string> fields;
  bool opened;  // the session existed before the error (so it must be closed with reason "error")
};

cab::v1::SessionConfig GoodConfig(const Problem& pb) {
  return ConfigFor(pb.shape, 2, TestMaskParams{}, cab::v1::MASK_FORMAT_BSR);
}

grpc::Status OpenThen(StreamClient& s, const Problem& pb, const std::function<void(StreamClient&)>& after) {
  auto ready = s.Open(GoodConfig(pb));
  if (!ready.ok()) return grpc::Status(grpc::StatusCode::INTERNAL, "open failed: " + ready.status().ToString());
  after(s);
  return s.FinishAfterError();
}

grpc::Status BadConfig(StreamClient& s, const Problem& pb, const std::function<void(cab::v1::SessionConfig&)>& f) {
  cab::v1::SessionConfig c = GoodConfig(pb);
  f(c);
  auto ready = s.Open(c);
  if (ready.ok()) return grpc::Status::OK;
  return s.FinishAfterError();
}

void WriteChunk(StreamClient& s, const cab::v1::Chunk& c) {
  cab::v1::StreamRequest r;
  *r.mutable_chunk() = c;
  s.Write(r);
}

std::vector<StreamCase> StreamCases() {
  return {
      {"chunk before config", [](StreamClient& s, const Problem& pb) {
         WriteChunk(s, FullChunk(pb, 0, 0, 64));
         return s.FinishAfterError();
       }, {"config"}, false},
      {"query before config", [](StreamClient& s, const Problem&) {
         cab::v1::StreamRequest r;
         r.mutable_query()->set_layer(0);
         s.Write(r);
         return s.FinishAfterError();
       }, {"config"}, false},
      {"config layers 0", [](StreamClient& s, const Problem& pb) {
         return BadConfig(s, pb, [](auto& c) { c.set_layers(0); });
       }, {"layers"}, false},
      {"config kv_heads does not divide heads", [](StreamClient& s, const Problem& pb) {
         return BadConfig(s, pb, [](auto& c) { c.set_kv_heads(3); });
       }, {"kv_heads", "heads"}, false},
      {"config block_size 8", [](StreamClient& s, const Problem& pb) {
         return BadConfig(s, pb, [](auto& c) { c.set_block_size(8); });
       }, {"block_size"}, false},
      {"config dtype int64", [](StreamClient& s, const Problem& pb) {
         return BadConfig(s, pb, [](auto& c) { c.set_dtype(cab::v1::DTYPE_INT64); });
       }, {"dtype"}, false},
      {"config sparsity 2", [](StreamClient& s, const Problem& pb) {
         return BadConfig(s, pb, [](auto& c) { c.mutable_params()->set_sparsity(2.f); });
       }, {"sparsity"}, false},
      {"second config", [](StreamClient& s, const Problem& pb) {
         return OpenThen(s, pb, [&](StreamClient& st) {
           cab::v1::StreamRequest r;
           *r.mutable_config() = GoodConfig(pb);
           st.Write(r);
         });
       }, {"config"}, true},
      {"chunk start skips tokens", [](StreamClient& s, const Problem& pb) {
         return OpenThen(s, pb, [&](StreamClient& st) {
           ASSERT_TRUE(st.SendChunk(FullChunk(pb, 0, 0, 100)).ok());
           WriteChunk(st, FullChunk(pb, 0, 150, 50));
         });
       }, {"start"}, true},
      {"chunk start repeats tokens", [](StreamClient& s, const Problem& pb) {
         return OpenThen(s, pb, [&](StreamClient& st) {
           ASSERT_TRUE(st.SendChunk(FullChunk(pb, 0, 0, 100)).ok());
           WriteChunk(st, FullChunk(pb, 0, 0, 100));
         });
       }, {"start"}, true},
      {"chunk layer out of range", [](StreamClient& s, const Problem& pb) {
         return OpenThen(s, pb, [&](StreamClient&) { WriteChunk(s, FullChunk(pb, 2, 0, 64)); });
       }, {"layer"}, true},
      {"chunk negative layer", [](StreamClient& s, const Problem& pb) {
         return OpenThen(s, pb, [&](StreamClient&) { WriteChunk(s, FullChunk(pb, -1, 0, 64)); });
       }, {"layer"}, true},
      {"chunk q bytes short", [](StreamClient& s, const Problem& pb) {
         return OpenThen(s, pb, [&](StreamClient&) {
           cab::v1::Chunk c = FullChunk(pb, 0, 0, 64);
           c.mutable_q()->mutable_data()->resize(100);
           WriteChunk(s, c);
         });
       }, {"q"}, true},
      {"chunk tokens differ from the tensors", [](StreamClient& s, const Problem& pb) {
         return OpenThen(s, pb, [&](StreamClient&) {
           cab::v1::Chunk c = FullChunk(pb, 0, 0, 64);
           c.set_tokens(65);
           WriteChunk(s, c);
         });
       }, {"tokens", "q"}, true},
      {"chunk dtype differs from config", [](StreamClient& s, const Problem& pb) {
         return OpenThen(s, pb, [&](StreamClient&) {
           cab::v1::Chunk c = FullChunk(pb, 0, 0, 64);
           *c.mutable_q() = ToWire(SliceTokens(pb.q, 0, 64), cab::DType::kF16);
           *c.mutable_k() = ToWire(SliceTokens(pb.k, 0, 64), cab::DType::kF16);
           WriteChunk(s, c);
         });
       }, {"dtype", "q"}, true},
      {"chunk head_dim differs from config", [](StreamClient& s, const Problem& pb) {
         return OpenThen(s, pb, [&](StreamClient&) {
           cab::v1::Chunk c = FullChunk(pb, 0, 0, 64);
           c.mutable_k()->set_shape(3, 16);
           c.mutable_k()->mutable_data()->resize(c.k().data().size() / 2);
           WriteChunk(s, c);
         });
       }, {"k", "head_dim"}, true},
      {"query layer out of range", [](StreamClient& s, const Problem& pb) {
         return OpenThen(s, pb, [&](StreamClient& st) {
           ASSERT_TRUE(st.SendChunk(FullChunk(pb, 0, 0, 100)).ok());
           cab::v1::StreamRequest r;
           r.mutable_query()->set_layer(5);
           st.Write(r);
         });
       }, {"layer"}, true},
      {"query of a layer with no tokens", [](StreamClient& s, const Problem& pb) {
         return OpenThen(s, pb, [&](StreamClient& st) {
           ASSERT_TRUE(st.SendChunk(FullChunk(pb, 0, 0, 100)).ok());
           cab::v1::StreamRequest r;
           r.mutable_query()->set_layer(1);
           st.Write(r);
         });
       }, {"layer"}, true},
      {"query row_begin past the blocks held", [](StreamClient& s, const Problem& pb) {
         return OpenThen(s, pb, [&](StreamClient& st) {
           ASSERT_TRUE(st.SendChunk(FullChunk(pb, 0, 0, 100)).ok());
           cab::v1::StreamRequest r;
           r.mutable_query()->set_layer(0);
           r.mutable_query()->set_row_begin(10);
           st.Write(r);
         });
       }, {"row_begin"}, true},
      {"representatives after a partial block", [](StreamClient& s, const Problem& pb) {
         cab::v1::SessionConfig c = ConfigFor(pb.shape, 1, TestMaskParams{}, cab::v1::MASK_FORMAT_BSR, true);
         if (!s.Open(c).ok()) return grpc::Status(grpc::StatusCode::INTERNAL, "open failed");
         // Blocks 0..1 cover 64 tokens; claim only 40 of them, then append block 2.
         cab::v1::Chunk first = RepresentativesChunk(pb, 0, 0, 2);
         first.set_tokens(40);
         if (!s.SendChunk(first).ok()) return grpc::Status(grpc::StatusCode::INTERNAL, "partial chunk refused");
         cab::v1::Chunk next = RepresentativesChunk(pb, 0, 2, 3);
         next.set_start(40);
         WriteChunk(s, next);
         return s.FinishAfterError();
       }, {"start", "tokens", "chunk"}, true},
      {"empty message", [](StreamClient& s, const Problem& pb) {
         return OpenThen(s, pb, [&](StreamClient& st) { st.Write(cab::v1::StreamRequest()); });
       }, {"kind", "chunk", "query", "config", "request"}, true},
  };
}

TEST_F(BadInputTest, StreamBadInputEndsTheStreamNamingTheField) {
  const Problem pb = MakeProblem(ProblemShape{});
  const int port = server_->metrics_port();
  double errors = 0;
  for (const StreamCase& c : StreamCases()) {
    SCOPED_TRACE(c.name);
    grpc::Status s;
    {
      StreamClient stream(*stub_, absl::Seconds(20));
      s = c.run(stream, pb);
    }
    EXPECT_TRUE(s.error_code() == StatusCode::INVALID_ARGUMENT || s.error_code() == StatusCode::FAILED_PRECONDITION)
        << Describe(s);
    ExpectNamesOneOf(s, c.fields);
    if (c.opened) {
      ++errors;
      WaitForMetric(port, "cab_sessions_closed_total", {{"reason", "error"}}, [&](double v) { return v == errors; });
    }
    WaitForMetric(port, "cab_active_sessions", {}, [](double v) { return v == 0; });
    ExpectServerHealthy();
  }
}
}  // namespace
}  // namespace cab_it
