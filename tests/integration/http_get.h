// A plain HTTP/1.0 GET over a loopback socket: what the tests need to read the Prometheus
// exposition of cab-server and to query a Prometheus server's HTTP API, with no HTTP library.
#pragma once

#include <string>

#include "absl/status/statusor.h"
#include "absl/time/time.h"

namespace cab_it {

// GET http://127.0.0.1:port/path_and_query; the body when the status is 200, an error otherwise.
absl::StatusOr<std::string> HttpGet(int port, const std::string& path_and_query,
                                    absl::Duration timeout = absl::Seconds(10));

// Percent-encodes a query-string value (Prometheus queries contain {}="...).
std::string UrlEncode(const std::string& s);

// A free TCP port on 127.0.0.1 at the time of the call (for processes that cannot pick port 0).
int FreeLoopbackPort();

}  // namespace cab_it
