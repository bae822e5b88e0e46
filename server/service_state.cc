#include "service_state.h"

namespace cab::server {

absl::Status Admit(const ServiceState& state, const grpc::CallbackServerContext& ctx) {
  if (state.auth.enabled()) {
    const auto& md = ctx.client_metadata();
    auto it = md.find("authorization");
    if (it == md.end()) return state.auth.Check(nullptr);
    const absl::string_view value(it->second.data(), it->second.size());
    if (auto s = state.auth.Check(&value); !s.ok()) return s;
  }
  if (state.draining.load()) return absl::UnavailableError("server is draining (shutting down); retry elsewhere");
  return absl::OkStatus();
}

absl::Status CheckAlive(const grpc::CallbackServerContext& ctx) {
  if (ctx.deadline() <= std::chrono::system_clock::now()) {
    return absl::DeadlineExceededError("deadline exceeded before the server finished");
  }
  if (ctx.IsCancelled()) return absl::CancelledError("call cancelled by the client");
  return absl::OkStatus();
}

}  // namespace cab::server
