// A real cab-server process on loopback for the integration tests: started with
// --listen=127.0.0.1:0 --metrics_listen=127.0.0.1:0 --port_file=... --backend=cpu plus the test's
// own flags, its ports read back from the port file, killed (and reaped) when the object goes away.
#pragma once

#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "child_process.h"

namespace cab_it {

struct ServerOptions {
  std::vector<std::string> flags;                            // extra command-line flags
  std::vector<std::pair<std::string, std::string>> env;      // extra environment variables
  bool default_addresses = true;  // pass --listen/--metrics_listen on port 0 and --backend=cpu
  absl::Duration start_timeout = absl::Seconds(30);
};

class ServerProcess {
 public:
  // Starts the server and waits until its port file appears (or the process dies / times out;
  // the error then carries the tail of the server's log).
  static absl::StatusOr<std::unique_ptr<ServerProcess>> Start(const ServerOptions& options = {});

  int grpc_port() const { return grpc_port_; }
  int metrics_port() const { return metrics_port_; }
  std::string address() const { return "127.0.0.1:" + std::to_string(grpc_port_); }
  const std::string& dir() const { return dir_; }  // scratch dir: log, port file

  void Signal(int sig) const { child_->Signal(sig); }
  // The exit code (128 + signal when killed by one); nullopt when still running after `timeout`.
  std::optional<int> WaitExit(absl::Duration timeout) { return child_->WaitExit(timeout); }
  bool Running() { return child_->Running(); }
  std::string Log() const { return child_->Log(); }

 private:
  ServerProcess() = default;
  std::unique_ptr<ChildProcess> child_;
  int grpc_port_ = 0, metrics_port_ = 0;
  std::string dir_;
};

// Path of the cab-server binary under test (from the build).
std::string ServerBinary();
// A fresh directory under the build tree's scratch area.
std::string MakeTempDir(const std::string& prefix);
// Removes a scratch directory and everything under it (errors ignored).
void RemoveTree(const std::string& dir);
// Parses "grpc=PORT metrics=PORT" (the port file's one line).
absl::StatusOr<std::pair<int, int>> ParsePortFile(const std::string& line);

}  // namespace cab_it
