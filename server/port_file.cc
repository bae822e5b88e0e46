#include "port_file.h"

#include <cstdio>
#include <fstream>

#include "absl/strings/str_cat.h"

namespace cab::server {

absl::Status WritePortFile(const std::string& path, int grpc_port, int metrics_port) {
  const std::string tmp = absl::StrCat(path, ".tmp");
  {
    std::ofstream out(tmp, std::ios::trunc);
    out << "grpc=" << grpc_port << " metrics=" << metrics_port << "\n";
    out.flush();
    if (!out) return absl::InternalError(absl::StrCat("--port_file: cannot write ", tmp));
  }
  if (std::rename(tmp.c_str(), path.c_str()) != 0) {
    return absl::InternalError(absl::StrCat("--port_file: cannot rename ", tmp, " to ", path));
  }
  return absl::OkStatus();
}

}  // namespace cab::server
