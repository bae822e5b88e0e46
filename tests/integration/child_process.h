// A child process for the tests (cab-server, prometheus, python3): started with its output in a log
// file, tied to the test process (it dies with it), signalled, waited for with a timeout, and
// killed and reaped when the object goes away.
#pragma once

#include <sys/types.h>

#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"

namespace cab_it {

class ChildProcess {
 public:
  // argv[0] is the executable's path; `env` is added to the test's environment.
  static absl::StatusOr<std::unique_ptr<ChildProcess>> Start(
      const std::vector<std::string>& argv, const std::string& log_path,
      const std::vector<std::pair<std::string, std::string>>& env = {});
  ~ChildProcess();  // SIGKILL and reap if still running

  ChildProcess(const ChildProcess&) = delete;
  ChildProcess& operator=(const ChildProcess&) = delete;

  pid_t pid() const { return pid_; }
  void Signal(int sig) const;
  bool Running();
  // The exit code, or 128 + signal when killed by one; nullopt when still running after `timeout`.
  std::optional<int> WaitExit(absl::Duration timeout);
  std::string Log() const;

 private:
  ChildProcess() = default;
  pid_t pid_ = -1;
  bool reaped_ = false;
  int exit_code_ = -1;
  std::string log_path_;
};

std::string ReadFileOrEmpty(const std::string& path);

}  // namespace cab_it
