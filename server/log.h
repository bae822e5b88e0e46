// One-line log records on stderr with a UTC timestamp (abseil 20220623 has no absl/log yet).
#pragma once

#include <string>

#include "absl/strings/str_cat.h"

namespace cab::server {

void LogLine(const std::string& line);

template <typename... Args>
void Log(const Args&... args) {
  LogLine(absl::StrCat(args...));
}

}  // namespace cab::server
