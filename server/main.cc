// cab-server: the CAB mask-prediction service. See docs/server.md for flags, limits and metrics.
#include <signal.h>

#include <algorithm>
#include <chrono>
#include <condition_variable>
#include <cstdlib>
#include <memory>
#include <mutex>
#include <thread>

#include "absl/flags/parse.h"
#include "absl/flags/usage.h"
#include "absl/time/clock.h"
#include "auth.h"
#include "backend_loader.h"
#include "grpcpp/ext/proto_server_reflection_plugin.h"
#include "grpcpp/grpcpp.h"
#include "grpcpp/health_check_service_interface.h"
#include "log.h"
#include "malloc_tuning.h"
#include "metrics.h"
#include "options.h"
#include "port_file.h"
#include "service.h"
#include "session_manager.h"
#include "tls.h"
#include "worker_pool.h"

#ifndef CAB_VERSION
#define CAB_VERSION "0.0.0"
#endif

namespace cab::server {
namespace {

constexpr const char* kServiceName = "cab.v1.MaskPredictor";

// Expires idle sessions every `period` until stopped.
class Janitor {
 public:
  Janitor(SessionManager* sessions, absl::Duration period)
      : thread_([this, sessions, period] {
          std::unique_lock<std::mutex> lock(mu_);
          while (!cv_.wait_for(lock, absl::ToChronoMilliseconds(period), [this] { return stop_; })) {
            lock.unlock();
            sessions->ExpireIdle(absl::Now());
            lock.lock();
          }
        }) {}
  ~Janitor() {
    {
      std::lock_guard<std::mutex> lock(mu_);
      stop_ = true;
    }
    cv_.notify_all();
    thread_.join();
  }

 private:
  std::mutex mu_;
  std::condition_variable cv_;
  bool stop_ = false;
  std::thread thread_;
};

int Main(int argc, char** argv) {
  TuneMallocForLargeRequests();
  // Signals are taken synchronously by the main thread (sigwait); every thread started from here
  // on inherits the mask, so none of them is interrupted by SIGTERM/SIGINT.
  sigset_t signals;
  sigemptyset(&signals);
  sigaddset(&signals, SIGTERM);
  sigaddset(&signals, SIGINT);
  pthread_sigmask(SIG_BLOCK, &signals, nullptr);
  signal(SIGPIPE, SIG_IGN);

  absl::SetProgramUsageMessage("cab-server: CAB block-mask prediction over gRPC (flags also from CAB_<FLAG>)");
  if (auto s = ApplyEnvironment([](const char* name) { return std::getenv(name); }); !s.ok()) {
    Log("configuration error: ", s.message());
    return 2;
  }
  absl::ParseCommandLine(argc, argv);
  auto options = ReadOptions();
  if (!options.ok()) {
    Log("configuration error: ", options.status().message());
    return 2;
  }
  const ServerOptions& o = *options;

  const int threads = o.threads > 0 ? o.threads : std::max(1u, std::thread::hardware_concurrency());
  BackendRequest br;
  br.kind = o.backend;
  br.plugin_dir = o.plugin_dir;
  br.executable_dir = ExecutableDir();
  br.threads = threads;
  br.plugin_options = PluginOptions(o);
  auto backend = MakeBackend(br);
  if (!backend.ok()) {
    Log("backend error: ", backend.status().message());
    return 1;
  }
  TokenAuth auth;
  if (!o.auth_token_file.empty()) {
    auto a = TokenAuth::FromFile(o.auth_token_file);
    if (!a.ok()) {
      Log("configuration error: ", a.status().message());
      return 2;
    }
    auth = *a;
  }
  auto creds = MakeServerCredentials(o);
  if (!creds.ok()) {
    Log("configuration error: ", creds.status().message());
    return 2;
  }

  Metrics metrics(CAB_VERSION, (*backend)->Name());
  std::unique_ptr<prometheus::Exposer> exposer;
  int metrics_port = 0;
  if (!o.metrics_listen.empty()) {
    auto e = StartExposer(o.metrics_listen, metrics.registry());
    if (!e.ok()) {
      Log(e.status().message());
      return 1;
    }
    exposer = std::move(*e);
    const auto ports = exposer->GetListeningPorts();
    if (!ports.empty()) metrics_port = ports.front();
  }

  WorkerPool pool(threads, static_cast<size_t>(o.max_queue),
                  [&metrics](size_t depth) { metrics.queue_depth().Set(static_cast<double>(depth)); });
  SessionManager sessions(o.limits, absl::Seconds(o.session_idle_timeout_s), &metrics);
  ServiceState state;
  state.options = o;
  state.version = CAB_VERSION;
  state.backend = backend->get();
  state.pool = &pool;
  state.metrics = &metrics;
  state.sessions = &sessions;
  state.auth = auth;
  MaskPredictorService service(&state);

  grpc::EnableDefaultHealthCheckService(true);
  grpc::reflection::InitProtoReflectionServerBuilderPlugin();
  grpc::ServerBuilder builder;
  int grpc_port = 0;
  builder.AddListeningPort(o.listen, *creds, &grpc_port);
  builder.SetMaxReceiveMessageSize(static_cast<int>(o.limits.max_message_bytes));
  builder.SetMaxSendMessageSize(static_cast<int>(o.limits.max_message_bytes));
  builder.RegisterService(&service);
  std::unique_ptr<grpc::Server> server = builder.BuildAndStart();
  if (!server || grpc_port == 0) {
    Log("cannot listen on --listen=", o.listen);
    return 1;
  }
  grpc::HealthCheckServiceInterface* health = server->GetHealthCheckService();
  health->SetServingStatus("", true);
  health->SetServingStatus(kServiceName, true);
  // Idle sessions are noticed within a quarter of the timeout (at most a second late).
  Janitor janitor(&sessions, std::min(absl::Seconds(1), absl::Seconds(o.session_idle_timeout_s) / 4));

  if (!o.port_file.empty()) {
    if (auto s = WritePortFile(o.port_file, grpc_port, metrics_port); !s.ok()) {
      Log(s.message());
      return 1;
    }
  }
  Log("serving cab.v1.MaskPredictor on port ", grpc_port, " (", o.tls_cert.empty() ? "plaintext" : "TLS",
      o.tls_client_ca.empty() ? "" : ", mutual", auth.enabled() ? ", bearer token" : "", "), backend ",
      (*backend)->Name(), ", ", threads, " workers, metrics ",
      metrics_port ? absl::StrCat("on port ", metrics_port) : std::string("off"));

  int sig = 0;
  sigwait(&signals, &sig);
  const auto drain_deadline = std::chrono::system_clock::now() +
                              std::chrono::milliseconds(static_cast<int64_t>(o.drain_grace_s * 1000));
  const double lame_duck_s = std::min(o.drain_lame_duck_s, o.drain_grace_s);
  Log(sig == SIGTERM ? "SIGTERM" : "SIGINT", ": draining (lame duck ", lame_duck_s, " s, grace ", o.drain_grace_s,
      " s)");
  // Lame duck: the listener stays open, new cab.v1 calls are answered UNAVAILABLE (which clients
  // retry elsewhere), health is NOT_SERVING (pushed to Watch subscribers, so health-checking
  // clients stop picking this server) and in-flight work goes on. Only then Shutdown: gRPC cancels
  // every call that reaches the server after Shutdown starts (RST_STREAM CANCEL, which clients do
  // not retry), so no client should still be sending by then.
  state.draining = true;
  health->SetServingStatus(false);
  std::this_thread::sleep_for(std::chrono::milliseconds(static_cast<int64_t>(lame_duck_s * 1000)));
  // Refuses new calls, lets in-flight ones finish, cancels what is left at the deadline.
  server->Shutdown(drain_deadline);
  server->Wait();
  // A task cancelled by the deadline still finishes its current stage and answers through the
  // server: wait for it before the server goes away.
  pool.WaitIdle();
  server.reset();
  Log("drained; exiting");
  return 0;
}

}  // namespace
}  // namespace cab::server

int main(int argc, char** argv) { return cab::server::Main(argc, argv); }
