// A cab-server child process on loopback for the client tests: --listen and --metrics_listen on
// port 0, --port_file read back for the ports, SIGKILLed and reaped on destruction.
#pragma once

#include <sys/types.h>

#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"

namespace cab_client_test {

class ServerLauncher {
 public:
  static absl::StatusOr<std::unique_ptr<ServerLauncher>> Start(const std::vector<std::string>& extra_flags = {});
  ~ServerLauncher();

  std::string address() const { return "127.0.0.1:" + std::to_string(grpc_port_); }
  int grpc_port() const { return grpc_port_; }
  int metrics_port() const { return metrics_port_; }
  void Kill(int sig);          // sends `sig` and reaps the process
  std::string Log() const;

 private:
  pid_t pid_ = -1;
  int grpc_port_ = 0, metrics_port_ = 0;
  std::string dir_;
};

// A scratch directory (removed by nobody: it lives under the build tree's Testing/ area or /tmp).
std::string MakeTempDir();

// GET http://127.0.0.1:port/metrics; the sum of every sample of `name` whose labels contain
// `label_substring` (empty: all).
absl::StatusOr<double> ScrapeMetric(int port, const std::string& name, const std::string& label_substring = "");

}  // namespace cab_client_test
