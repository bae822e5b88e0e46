// One cab-server child process for the scale-out test: started with posix_spawn, found through
// its --port_file, signalled and reaped by its own pid (never by name), scraped over HTTP.
#pragma once

#include <sys/types.h>

#include <map>
#include <string>
#include <vector>

#include "absl/status/statusor.h"

namespace cab::deploy_test {

class ReplicaProcess {
 public:
  ReplicaProcess(std::string name, std::string exe, std::string workdir)
      : name_(std::move(name)), exe_(std::move(exe)), workdir_(std::move(workdir)) {}
  ~ReplicaProcess();  // SIGKILLs and reaps a child that is still running

  // Starts `exe` with loopback listeners on ports the server picks, plus `extra_args`, and waits
  // (up to timeout_s) for the port file.
  absl::Status Start(const std::vector<std::string>& extra_args, double timeout_s);
  // Sends `sig` if the child is still running.
  void Signal(int sig);
  // Waits up to timeout_s for the child to exit; its exit code, or -1 (still running), or
  // 128 + signal when a signal ended it.
  int WaitExit(double timeout_s);
  bool Running();

  // /metrics text of the replica, or an error when it does not answer.
  absl::StatusOr<std::string> Scrape() const;
  const std::string& name() const { return name_; }
  int grpc_port() const { return grpc_port_; }
  int metrics_port() const { return metrics_port_; }
  std::string address() const { return "127.0.0.1:" + std::to_string(grpc_port_); }
  std::string LogTail(size_t bytes) const;

 private:
  std::string name_, exe_, workdir_;
  pid_t pid_ = -1;
  int exit_code_ = -1;
  int grpc_port_ = 0, metrics_port_ = 0;
};

// Sum of the samples of metric `name` whose label set includes every `labels` pair
// (Prometheus text format).
double SumSamples(const std::string& metrics_text, const std::string& name,
                  const std::map<std::string, std::string>& labels = {});

// HTTP/1.0 GET of http://127.0.0.1:port/path; the body, or an error.
absl::StatusOr<std::string> HttpGet(int port, const std::string& path, double timeout_s);

}  // namespace cab::deploy_test
