// The streaming session's identity reaches the backend: a real cab.v1 service on loopback (in this
// process) over a recording backend. Every mask query of a stream carries the stream's session key
// (nonzero, distinct per stream), unary Predict carries none, and the backend is told to release the
// session however the stream ends: completed, error, cancelled by the client, idle expiry.
#include <chrono>
#include <map>
#include <memory>
#include <mutex>
#include <set>
#include <thread>
#include <vector>

#include "gtest/gtest.h"
#include "grpcpp/grpcpp.h"
#include "metrics.h"
#include "service.h"
#include "service_state.h"
#include "session_manager.h"
#include "wire/tensor_codec.h"
#include "worker_pool.h"

namespace cab::server {
namespace {

// The CPU backend, recording the session of every PredictMask and every ReleaseSession.
class RecordingBackend final : public cab::Backend {
 public:
  std::string Name() const override { return "recording"; }
  std::vector<std::string> Devices() const override { return {"cpu"}; }
  absl::StatusOr<cab::CoarseBlocks> Coarsen(const cab::TensorView& x, int block_size) override {
    return cpu_->Coarsen(x, block_size);
  }
  absl::StatusOr<cab::HeadGraph> Graph(const cab::CoarseBlocks& q, const cab::CoarseBlocks& k, int b, int h,
                                       cab::Coarsening qc, const cab::GraphParams& p) override {
    return cpu_->Graph(q, k, b, h, qc, p);
  }
  absl::StatusOr<cab::MaskResult> PredictMask(const cab::CoarseBlocks& q, const cab::CoarseBlocks& k,
                                              const cab::MaskParams& p, bool diagnostics) override {
    return PredictMask(q, k, p, diagnostics, cab::CallContext{});
  }
  absl::StatusOr<cab::MaskResult> PredictMask(const cab::CoarseBlocks& q, const cab::CoarseBlocks& k,
                                              const cab::MaskParams& p, bool diagnostics,
                                              const cab::CallContext& call) override {
    {
      std::lock_guard<std::mutex> lock(mu_);
      predicts_.push_back(call.session);
    }
    return cpu_->PredictMask(q, k, p, diagnostics);
  }
  absl::StatusOr<cab::KeepIndices> Evict(const cab::EvictInputs& in, const cab::EvictParams& p) override {
    return cpu_->Evict(in, p);
  }
  void ReleaseSession(uint64_t session) override {
    std::lock_guard<std::mutex> lock(mu_);
    ++released_[session];
  }

  std::vector<uint64_t> predicts() {
    std::lock_guard<std::mutex> lock(mu_);
    return predicts_;
  }
  int released(uint64_t session) {
    std::lock_guard<std::mutex> lock(mu_);
    return released_.count(session) ? released_[session] : 0;
  }
  // OnDone (where the release happens) may run just after the client has its status: wait a little.
  bool WaitReleased(uint64_t session) {
    for (int i = 0; i < 500; ++i) {
      if (released(session) > 0) return true;
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
    return false;
  }

 private:
  std::unique_ptr<cab::Backend> cpu_ = cab::MakeCpuBackend({1});
  std::mutex mu_;
  std::vector<uint64_t> predicts_;
  std::map<uint64_t, int> released_;
};

constexpr int kH = 4, kHkv = 2, kD = 8, kBs = 16, kN = 64;

void Fill(cab::v1::Tensor* t, std::vector<int64_t> shape, int seed) {
  int64_t n = 1;
  for (int64_t d : shape) n *= d;
  std::vector<float> v(n);
  for (int64_t i = 0; i < n; ++i) v[i] = static_cast<float>((i * 7 + seed) % 11) - 5.0f;
  wire::EncodeFloat(cab::DType::kF32, shape, v.data(), t);
}

class BackendSessionTest : public ::testing::Test {
 protected:
  void SetUp() override {
    state_.options.session_idle_timeout_s = 300;
    state_.version = "test";
    state_.backend = &backend_;
    state_.pool = &pool_;
    state_.metrics = &metrics_;
    state_.sessions = &sessions_;
    service_ = std::make_unique<MaskPredictorService>(&state_);
    grpc::ServerBuilder builder;
    int port = 0;
    builder.AddListeningPort("127.0.0.1:0", grpc::InsecureServerCredentials(), &port);
    builder.RegisterService(service_.get());
    server_ = builder.BuildAndStart();
    ASSERT_NE(server_, nullptr);
    ASSERT_GT(port, 0);
    stub_ = cab::v1::MaskPredictor::NewStub(
        grpc::CreateChannel("127.0.0.1:" + std::to_string(port), grpc::InsecureChannelCredentials()));
  }
  void TearDown() override {
    if (server_) {
      server_->Shutdown(std::chrono::system_clock::now() + std::chrono::seconds(5));
      server_->Wait();
    }
    pool_.WaitIdle();
  }

  using Stream = grpc::ClientReaderWriter<cab::v1::StreamRequest, cab::v1::StreamResponse>;

  // Sends the config and one chunk of kN tokens on layer 0; returns after both answers.
  void Configure(Stream* s) {
    cab::v1::StreamRequest req;
    cab::v1::SessionConfig* c = req.mutable_config();
    c->set_layers(1);
    c->set_heads(kH);
    c->set_kv_heads(kHkv);
    c->set_head_dim(kD);
    c->set_block_size(kBs);
    c->mutable_params()->set_sparsity(0.5f);
    c->mutable_params()->set_graph_degree(2);
    cab::v1::StreamResponse resp;
    ASSERT_TRUE(s->Write(req));
    ASSERT_TRUE(s->Read(&resp));
    ASSERT_TRUE(resp.has_ready());
    req.Clear();
    cab::v1::Chunk* chunk = req.mutable_chunk();
    chunk->set_layer(0);
    chunk->set_start(0);
    chunk->set_tokens(kN);
    Fill(chunk->mutable_q(), {1, kH, kN, kD}, 1);
    Fill(chunk->mutable_k(), {1, kHkv, kN, kD}, 2);
    ASSERT_TRUE(s->Write(req));
    ASSERT_TRUE(s->Read(&resp));
    ASSERT_TRUE(resp.has_ack()) << resp.DebugString();
  }
  void Query(Stream* s, int layer) {
    cab::v1::StreamRequest req;
    req.mutable_query()->set_layer(layer);
    req.mutable_query()->set_request_id(7);
    ASSERT_TRUE(s->Write(req));
  }
  void QueryAndRead(Stream* s) {
    Query(s, 0);
    cab::v1::StreamResponse resp;
    ASSERT_TRUE(s->Read(&resp));
    ASSERT_TRUE(resp.has_mask()) << resp.DebugString();
  }
  // The session key of the stream's queries (the predicts recorded since `from`), which must all agree.
  uint64_t OnlyKey(size_t from) {
    const std::vector<uint64_t> all = backend_.predicts();
    EXPECT_GT(all.size(), from);
    std::set<uint64_t> keys(all.begin() + std::min(from, all.size()), all.end());
    EXPECT_EQ(keys.size(), 1u) << "one stream's queries carried different keys";
    return keys.empty() ? 0 : *keys.begin();
  }

  RecordingBackend backend_;
  Metrics metrics_{"test", "recording"};
  WorkerPool pool_{2, 16};
  SessionManager sessions_{Limits{}, absl::Seconds(300), &metrics_};
  ServiceState state_;
  std::unique_ptr<MaskPredictorService> service_;
  std::unique_ptr<grpc::Server> server_;
  std::unique_ptr<cab::v1::MaskPredictor::Stub> stub_;
};

TEST_F(BackendSessionTest, CompletedStreamsCarryTheirOwnKeyAndAreReleased) {
  grpc::ClientContext ctx_a, ctx_b;
  auto a = stub_->Stream(&ctx_a);
  auto b = stub_->Stream(&ctx_b);  // open at the same time as a
  Configure(a.get());
  Configure(b.get());
  QueryAndRead(a.get());
  QueryAndRead(a.get());
  const uint64_t key_a = OnlyKey(0);
  QueryAndRead(b.get());
  const uint64_t key_b = OnlyKey(2);
  EXPECT_NE(key_a, 0u);
  EXPECT_NE(key_b, 0u);
  EXPECT_NE(key_a, key_b);
  EXPECT_EQ(backend_.released(key_a), 0) << "released while the stream is open";
  ASSERT_TRUE(a->WritesDone());
  ASSERT_TRUE(a->Finish().ok());
  EXPECT_TRUE(backend_.WaitReleased(key_a));
  EXPECT_EQ(backend_.released(key_b), 0) << "another stream's end released b";
  ASSERT_TRUE(b->WritesDone());
  ASSERT_TRUE(b->Finish().ok());
  EXPECT_TRUE(backend_.WaitReleased(key_b));
  EXPECT_EQ(backend_.released(key_a), 1);
}

TEST_F(BackendSessionTest, ErrorEndReleases) {
  grpc::ClientContext ctx;
  auto s = stub_->Stream(&ctx);
  Configure(s.get());
  QueryAndRead(s.get());
  const uint64_t key = OnlyKey(0);
  Query(s.get(), 5);  // no layer 5: INVALID_ARGUMENT ends the stream
  cab::v1::StreamResponse resp;
  EXPECT_FALSE(s->Read(&resp));
  EXPECT_EQ(s->Finish().error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_TRUE(backend_.WaitReleased(key));
}

TEST_F(BackendSessionTest, ClientCancelReleases) {
  grpc::ClientContext ctx;
  auto s = stub_->Stream(&ctx);
  Configure(s.get());
  QueryAndRead(s.get());
  const uint64_t key = OnlyKey(0);
  ctx.TryCancel();
  EXPECT_EQ(s->Finish().error_code(), grpc::StatusCode::CANCELLED);
  EXPECT_TRUE(backend_.WaitReleased(key));
}

TEST_F(BackendSessionTest, IdleExpiryReleases) {
  grpc::ClientContext ctx;
  auto s = stub_->Stream(&ctx);
  Configure(s.get());
  QueryAndRead(s.get());
  const uint64_t key = OnlyKey(0);
  EXPECT_EQ(sessions_.ExpireIdle(absl::Now() + absl::Hours(1)), 1);
  cab::v1::StreamResponse resp;
  EXPECT_FALSE(s->Read(&resp));
  // ABORTED, or CANCELLED when the server still counted the last reply's write as outstanding (its
  // idle path then cancels the call so that a client which stopped reading cannot hold it).
  const grpc::StatusCode code = s->Finish().error_code();
  EXPECT_TRUE(code == grpc::StatusCode::ABORTED || code == grpc::StatusCode::CANCELLED) << code;
  EXPECT_TRUE(backend_.WaitReleased(key));
}

TEST_F(BackendSessionTest, UnaryPredictCarriesNoSession) {
  cab::v1::PredictRequest req;
  req.set_block_size(kBs);
  Fill(req.mutable_q(), {1, kH, kN, kD}, 1);
  Fill(req.mutable_k(), {1, kHkv, kN, kD}, 2);
  req.mutable_params()->set_sparsity(0.5f);
  req.mutable_params()->set_graph_degree(2);
  grpc::ClientContext ctx;
  cab::v1::PredictResponse resp;
  const grpc::Status st = stub_->Predict(&ctx, req, &resp);
  ASSERT_TRUE(st.ok()) << st.error_message();
  EXPECT_EQ(backend_.predicts(), std::vector<uint64_t>{0});
}

}  // namespace
}  // namespace cab::server
