// The --port_file contract: once serving, one line `grpc=PORT metrics=PORT`, written atomically
// (temporary file + rename) so that a reader never sees half a line.
#pragma once

#include <string>

#include "absl/status/status.h"

namespace cab::server {

// metrics_port 0: metrics disabled.
absl::Status WritePortFile(const std::string& path, int grpc_port, int metrics_port);

}  // namespace cab::server
