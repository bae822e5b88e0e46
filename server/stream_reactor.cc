#include "stream_reactor.h"

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "limits_check.h"
#include "log.h"
#include "mask_compute.h"
#include "wire/params_codec.h"

namespace cab::server {

StreamReactor::StreamReactor(ServiceState* state, grpc::CallbackServerContext* ctx)
    : state_(state), ctx_(ctx), start_(std::chrono::steady_clock::now()) {
  self_ = std::shared_ptr<StreamReactor>(this, [](StreamReactor* r) { delete r; });
  state_->metrics->active_streams().Increment();
  absl::Status s = Admit(*state_, *ctx_);
  if (!s.ok()) {
    End(s, nullptr);
    return;
  }
  std::weak_ptr<StreamReactor> weak = self_;
  pending_key_ = state_->sessions->AddPendingStream(absl::Now(), [weak] {
    if (auto r = weak.lock()) r->OnIdleBeforeConfig();
  });
  StartRead(&req_);
}

void StreamReactor::DropPending() {
  std::lock_guard<std::mutex> lock(mu_);
  if (pending_key_ != 0) state_->sessions->RemovePendingStream(pending_key_);
  pending_key_ = 0;
}

void StreamReactor::OnIdleBeforeConfig() {
  End(absl::AbortedError(absl::StrCat("config: no SessionConfig within --session_idle_timeout_s=",
                                      state_->options.session_idle_timeout_s, " seconds")),
      nullptr);
}

void StreamReactor::OnReadDone(bool ok) {
  if (!ok) {
    // The client half-closed (done sending) or the call broke.
    if (ctx_->IsCancelled()) {
      End(absl::CancelledError("stream cancelled"), kClosedCancelled);
    } else {
      End(absl::OkStatus(), kClosedCompleted);
    }
    return;
  }
  {
    std::lock_guard<std::mutex> lock(mu_);
    busy_ = true;
  }
  state_->metrics->Received(req_.ByteSizeLong());
  if (session_key_ != 0) state_->sessions->Touch(session_key_, absl::Now());
  Handle();
}

void StreamReactor::Handle() {
  switch (req_.kind_case()) {
    case cab::v1::StreamRequest::kConfig:
      return HandleConfig(req_.config());
    case cab::v1::StreamRequest::kChunk:
    case cab::v1::StreamRequest::kQuery: {
      if (!session_) {
        return Fail(absl::FailedPreconditionError("config: the first message of a stream must be a SessionConfig"),
                    nullptr);
      }
      const bool is_chunk = req_.kind_case() == cab::v1::StreamRequest::kChunk;
      if (!is_chunk) {
        // Cheap checks answer at once instead of waiting in the queue.
        if (auto s = session_->CheckQuery(req_.query()); !s.ok()) return Fail(s, kClosedError);
      }
      state_->metrics->inflight_requests().Increment();
      const bool queued = state_->pool->Submit([this, is_chunk] { RunTask(is_chunk); });
      if (!queued) {
        state_->metrics->inflight_requests().Decrement();
        Fail(absl::ResourceExhaustedError("server busy: the worker queue is full (--max_queue); retry with backoff"),
             kClosedError);
      }
      return;
    }
    default:
      return Fail(absl::InvalidArgumentError("request: empty StreamRequest (set config, chunk or query)"),
                  session_ ? kClosedError : nullptr);
  }
}

void StreamReactor::HandleConfig(const cab::v1::SessionConfig& config) {
  if (session_) return Fail(absl::FailedPreconditionError("config: the session is already configured"), kClosedError);
  auto spec = wire::ToSessionSpec(config);
  if (!spec.ok()) return Fail(spec.status(), nullptr);
  const Limits& limits = state_->options.limits;
  SequenceShape shape{spec->batch, std::max(spec->heads, spec->kv_heads), 0, spec->head_dim, spec->block_size};
  if (auto s = CheckSequenceLimits(shape, limits, "config"); !s.ok()) return Fail(s, nullptr);
  std::weak_ptr<StreamReactor> weak = self_;
  auto ticket = state_->sessions->Open(spec->session_id, absl::Now(), [weak] {
    if (auto r = weak.lock()) r->OnIdle();
  });
  if (!ticket.ok()) return Fail(ticket.status(), nullptr);
  DropPending();
  session_key_ = ticket->key;
  spec->session_id = ticket->id;
  session_ = std::make_unique<Session>(*spec, limits, ticket->key);
  cab::v1::StreamResponse r;
  r.mutable_ready()->set_session_id(ticket->id);
  r.mutable_ready()->set_memory_limit_bytes(limits.max_session_bytes);
  Answer(std::move(r));
}

void StreamReactor::RunTask(bool is_chunk) {
  StageHooks hooks;
  hooks.check = [this] { return CheckAlive(*ctx_); };
  Metrics* m = state_->metrics;
  hooks.observe = [m](Stage s, double seconds) { m->StageTime(s, seconds); };
  absl::Status st = hooks.Check();
  cab::v1::StreamResponse r;
  if (st.ok() && is_chunk) {
    SessionManager* sessions = state_->sessions;
    const uint64_t key = session_key_;
    auto ack = session_->Append(
        req_.chunk(), [sessions, key](int64_t bytes) { return sessions->CheckBytes(key, bytes); }, hooks);
    if (ack.ok()) {
      sessions->SetBytes(key, session_->MemoryBytes(), absl::Now());
      *r.mutable_ack() = std::move(*ack);
    } else {
      st = ack.status();
    }
  } else if (st.ok()) {
    const auto t0 = std::chrono::steady_clock::now();
    st = session_->Query(req_.query(), *state_->backend, hooks, r.mutable_mask());
    r.mutable_mask()->mutable_timings()->set_total_seconds(SecondsSince(t0));
    state_->sessions->Touch(session_key_, absl::Now());
  }
  state_->metrics->inflight_requests().Decrement();
  if (!st.ok()) {
    const bool cancelled = st.code() == absl::StatusCode::kCancelled;
    return Fail(st, cancelled ? kClosedCancelled : kClosedError);
  }
  Answer(std::move(r));
}

void StreamReactor::Answer(cab::v1::StreamResponse response) {
  Next next;
  bool read = false;
  {
    std::lock_guard<std::mutex> lock(mu_);
    busy_ = false;
    if (!ending_) {
      state_->metrics->Sent(response.ByteSizeLong());
      writes_.push_back(std::move(response));
      read = true;
      starting_read_ = true;
    }
    next = NextLocked();
  }
  Run(next);
  if (!read) return;
  StartRead(&req_);
  {
    std::lock_guard<std::mutex> lock(mu_);
    starting_read_ = false;
    next = NextLocked();
  }
  Run(next);
}

void StreamReactor::OnWriteDone(bool ok) {
  Next next;
  {
    std::lock_guard<std::mutex> lock(mu_);
    writing_ = false;
    if (!writes_.empty()) writes_.pop_front();
    if (!ok) {
      // The stream broke under us: nothing more can be sent.
      writes_.clear();
      if (!ending_) ending_ = absl::CancelledError("stream broken while writing");
    }
    next = NextLocked();
  }
  if (!ok) CloseSession(kClosedCancelled);
  Run(next);
}

void StreamReactor::OnCancel() { CloseSession(kClosedCancelled); }

void StreamReactor::OnIdle() {
  // The manager has already closed the session (reason idle_timeout).
  End(absl::AbortedError(absl::StrCat("session: idle for more than --session_idle_timeout_s=",
                                      state_->options.session_idle_timeout_s, " seconds; its state was freed")),
      nullptr);
  std::lock_guard<std::mutex> lock(mu_);
  // A client that stopped reading holds a write forever; cancelling releases it. Safe under mu_:
  // Finish (and so OnDone) cannot happen before finished_ is set, which needs mu_.
  if (!finished_ && writing_) ctx_->TryCancel();
}

void StreamReactor::Fail(const absl::Status& status, const char* reason) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    busy_ = false;
  }
  End(status, reason);
}

void StreamReactor::End(const absl::Status& status, const char* reason) {
  DropPending();
  if (reason) CloseSession(reason);
  Next next;
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (!ending_) ending_ = status;
    next = NextLocked();
  }
  Run(next);
}

StreamReactor::Next StreamReactor::NextLocked() {
  Next next;
  if (finished_) return next;
  if (!writing_ && !writes_.empty()) {
    writing_ = true;
    // The element stays put until OnWriteDone pops it (deque push_back keeps references valid).
    next.write = &writes_.front();
    return next;
  }
  if (ending_ && !writing_ && !busy_ && !starting_read_) {
    finished_ = true;
    next.finish = true;
    next.status = ToGrpc(*ending_);
  }
  return next;
}

void StreamReactor::Run(const Next& next) {
  if (next.write) {
    StartWrite(next.write);
  } else if (next.finish) {
    state_->metrics->Request("Stream", static_cast<int>(next.status.error_code()), SecondsSince(start_));
    Finish(next.status);
  }
}

void StreamReactor::CloseSession(const char* reason) {
  if (session_key_ != 0) state_->sessions->Close(session_key_, reason);
}

void StreamReactor::OnDone() {
  // A stream that ended without a clean close (for example at shutdown) still frees its session.
  DropPending();
  CloseSession(kClosedCancelled);
  // The backend's hold on the session (its pinned device) ends here, whatever ended the stream:
  // OnDone comes after the last task, so no later call can pin the session again (a release at
  // close could race with a query already past its cancellation check).
  if (session_key_ != 0) state_->backend->ReleaseSession(session_key_);
  state_->metrics->active_streams().Decrement();
  // Drops the reactor's own reference; the idle callback may hold the last one for a moment.
  std::shared_ptr<StreamReactor> last = std::move(self_);
}

}  // namespace cab::server
