// One Stream RPC = one session. Messages are handled one at a time, in order: the next read is
// started only when the current message's answer is queued, so masks come back in request order
// and a slow client cannot pile up work. Heavy messages (chunks, mask queries) run on the worker
// pool. The RPC finishes once no task runs and no write is outstanding; only then may gRPC call
// OnDone, which deletes the reactor. The session's backend calls carry its key (cab::CallContext), and
// OnDone releases it in the backend (a multi-GPU backend pins a session to one device).
#pragma once

#include <atomic>
#include <chrono>
#include <deque>
#include <memory>
#include <mutex>
#include <optional>

#include "cab/v1/cab.grpc.pb.h"
#include "service_state.h"
#include "session.h"

namespace cab::server {

class StreamReactor final : public grpc::ServerBidiReactor<cab::v1::StreamRequest, cab::v1::StreamResponse> {
 public:
  StreamReactor(ServiceState* state, grpc::CallbackServerContext* ctx);

  void OnReadDone(bool ok) override;
  void OnWriteDone(bool ok) override;
  void OnCancel() override;
  void OnDone() override;

 private:
  void Handle();
  void HandleConfig(const cab::v1::SessionConfig& config);
  void RunTask(bool is_chunk);
  // Queues a response and starts the next read.
  void Answer(cab::v1::StreamResponse response);
  // Ends the stream with `status` once idle; `reason` labels the session's close (null: keep).
  void End(const absl::Status& status, const char* reason);
  // The message being handled failed: it is no longer in progress, and the stream ends.
  void Fail(const absl::Status& status, const char* reason);
  void OnIdle();
  void OnIdleBeforeConfig();
  void DropPending();
  // Called with mu_ held: what to start once the lock is released.
  struct Next {
    const cab::v1::StreamResponse* write = nullptr;
    bool finish = false;
    grpc::Status status;
  };
  Next NextLocked();
  void Run(const Next& next);
  void CloseSession(const char* reason);

  ServiceState* state_;
  grpc::CallbackServerContext* ctx_;
  const std::chrono::steady_clock::time_point start_;

  cab::v1::StreamRequest req_;
  std::unique_ptr<Session> session_;
  std::atomic<uint64_t> session_key_{0};
  uint64_t pending_key_ = 0;  // registered until the SessionConfig arrives (idle expiry)  // read by OnCancel and the idle callback

  // Owns the reactor between construction and OnDone, and a little longer where the idle-expiry
  // callback (on the janitor thread) still holds a reference.
  std::shared_ptr<StreamReactor> self_;

  std::mutex mu_;
  std::deque<cab::v1::StreamResponse> writes_;
  bool writing_ = false;
  bool busy_ = false;           // a message is being handled (inline or on a worker)
  bool starting_read_ = false;  // StartRead is about to be called: no Finish before it
  std::optional<absl::Status> ending_;
  bool finished_ = false;       // Finish was called (set under mu_ before the call)
};

}  // namespace cab::server
