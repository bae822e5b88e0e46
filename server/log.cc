#include "log.h"

#include <cstdio>
#include <mutex>

#include "absl/time/clock.h"
#include "absl/time/time.h"

namespace cab::server {

void LogLine(const std::string& line) {
  static std::mutex mu;
  const std::string stamp = absl::FormatTime("%Y-%m-%dT%H:%M:%E3SZ", absl::Now(), absl::UTCTimeZone());
  std::lock_guard<std::mutex> lock(mu);
  std::fprintf(stderr, "%s cab-server: %s\n", stamp.c_str(), line.c_str());
  std::fflush(stderr);
}

}  // namespace cab::server
