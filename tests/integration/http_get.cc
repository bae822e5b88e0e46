#include "http_get.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"

namespace cab_it {
namespace {

// Closes the socket on every path out.
struct Fd {
  int fd = -1;
  ~Fd() {
    if (fd >= 0) ::close(fd);
  }
};

sockaddr_in Loopback(int port) {
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(static_cast<uint16_t>(port));
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  return addr;
}

}  // namespace

absl::StatusOr<std::string> HttpGet(int port, const std::string& path_and_query, absl::Duration timeout) {
  const absl::Time deadline = absl::Now() + timeout;
  Fd s{::socket(AF_INET, SOCK_STREAM, 0)};
  if (s.fd < 0) return absl::InternalError(absl::StrCat("socket: ", std::strerror(errno)));
  sockaddr_in addr = Loopback(port);
  if (::connect(s.fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0) {
    return absl::UnavailableError(absl::StrCat("connect 127.0.0.1:", port, ": ", std::strerror(errno)));
  }
  const std::string req =
      absl::StrCat("GET ", path_and_query, " HTTP/1.0\r\nHost: 127.0.0.1:", port, "\r\nConnection: close\r\n\r\n");
  for (size_t sent = 0; sent < req.size();) {
    const ssize_t n = ::send(s.fd, req.data() + sent, req.size() - sent, MSG_NOSIGNAL);
    if (n <= 0) return absl::UnavailableError(absl::StrCat("send: ", std::strerror(errno)));
    sent += static_cast<size_t>(n);
  }
  std::string resp;
  char buf[16384];
  while (true) {
    const int64_t left_ms = absl::ToInt64Milliseconds(deadline - absl::Now());
    if (left_ms <= 0) return absl::DeadlineExceededError(absl::StrCat("GET ", path_and_query, ": timed out"));
    pollfd pfd{s.fd, POLLIN, 0};
    if (::poll(&pfd, 1, static_cast<int>(left_ms)) <= 0) continue;
    const ssize_t n = ::recv(s.fd, buf, sizeof(buf), 0);
    if (n < 0) return absl::UnavailableError(absl::StrCat("recv: ", std::strerror(errno)));
    if (n == 0) break;
    resp.append(buf, static_cast<size_t>(n));
  }
  const size_t header_end = resp.find("\r\n\r\n");
  if (header_end == std::string::npos) return absl::DataLossError("no HTTP header end");
  // Status line: HTTP/1.x CODE REASON
  const size_t sp = resp.find(' ');
  int code = 0;
  if (sp == std::string::npos || !absl::SimpleAtoi(resp.substr(sp + 1, 3), &code)) {
    return absl::DataLossError("bad HTTP status line");
  }
  std::string body = resp.substr(header_end + 4);
  if (code != 200) {
    return absl::UnavailableError(absl::StrCat("GET ", path_and_query, ": HTTP ", code, ": ", body.substr(0, 500)));
  }
  return body;
}

std::string UrlEncode(const std::string& s) {
  std::string out;
  for (unsigned char c : s) {
    if (std::isalnum(c) || c == '-' || c == '_' || c == '.' || c == '~') {
      out.push_back(static_cast<char>(c));
    } else {
      out += absl::StrFormat("%%%02X", c);
    }
  }
  return out;
}

int FreeLoopbackPort() {
  Fd s{::socket(AF_INET, SOCK_STREAM, 0)};
  if (s.fd < 0) return -1;
  sockaddr_in addr = Loopback(0);
  if (::bind(s.fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0) return -1;
  socklen_t len = sizeof(addr);
  if (::getsockname(s.fd, reinterpret_cast<sockaddr*>(&addr), &len) != 0) return -1;
  return ntohs(addr.sin_port);
}

}  // namespace cab_it
