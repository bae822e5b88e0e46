#include "server_process.h"

#include <sys/stat.h>
#include <unistd.h>

#include <filesystem>
#include <system_error>
#include <thread>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"

#ifndef CAB_SERVER_BINARY
#error "CAB_SERVER_BINARY must name the cab-server executable"
#endif
#ifndef CAB_IT_SCRATCH_DIR
#error "CAB_IT_SCRATCH_DIR must name a writable scratch directory"
#endif

namespace cab_it {
namespace {

std::string Tail(const std::string& s, size_t n) { return s.size() <= n ? s : s.substr(s.size() - n); }

}  // namespace

std::string ServerBinary() { return CAB_SERVER_BINARY; }

std::string MakeTempDir(const std::string& prefix) {
  ::mkdir(CAB_IT_SCRATCH_DIR, 0755);
  std::string tmpl = absl::StrCat(CAB_IT_SCRATCH_DIR, "/", prefix, "-XXXXXX");
  std::vector<char> buf(tmpl.begin(), tmpl.end());
  buf.push_back('\0');
  if (::mkdtemp(buf.data()) == nullptr) return "";
  return std::string(buf.data());
}

void RemoveTree(const std::string& dir) {
  std::error_code ec;
  std::filesystem::remove_all(dir, ec);
}

absl::StatusOr<std::pair<int, int>> ParsePortFile(const std::string& line) {
  int grpc = -1, metrics = -1;
  for (absl::string_view field : absl::StrSplit(absl::StripAsciiWhitespace(line), ' ', absl::SkipEmpty())) {
    std::pair<std::string, std::string> kv = absl::StrSplit(field, absl::MaxSplits('=', 1));
    int v = 0;
    if (!absl::SimpleAtoi(kv.second, &v)) return absl::InvalidArgumentError(absl::StrCat("bad field: ", field));
    if (kv.first == "grpc") grpc = v;
    if (kv.first == "metrics") metrics = v;
  }
  if (grpc <= 0) return absl::InvalidArgumentError(absl::StrCat("no grpc=PORT in '", line, "'"));
  return std::make_pair(grpc, metrics);
}

absl::StatusOr<std::unique_ptr<ServerProcess>> ServerProcess::Start(const ServerOptions& options) {
  std::unique_ptr<ServerProcess> p(new ServerProcess());
  p->dir_ = MakeTempDir("server");
  if (p->dir_.empty()) return absl::InternalError("mkdtemp failed");
  const std::string port_file = p->dir_ + "/ports";

  std::vector<std::string> args = {ServerBinary()};
  if (options.default_addresses) {
    args.push_back("--listen=127.0.0.1:0");
    args.push_back("--metrics_listen=127.0.0.1:0");
    args.push_back("--backend=cpu");
  }
  args.push_back("--port_file=" + port_file);
  for (const auto& f : options.flags) args.push_back(f);
  auto child = ChildProcess::Start(args, p->dir_ + "/server.log", options.env);
  if (!child.ok()) return child.status();
  p->child_ = std::move(*child);

  const absl::Time deadline = absl::Now() + options.start_timeout;
  while (absl::Now() < deadline) {
    if (!p->child_->Running()) {
      return absl::InternalError(absl::StrCat("cab-server exited with ", *p->child_->WaitExit(absl::ZeroDuration()),
                                              " before serving; log:\n", Tail(p->Log(), 4000)));
    }
    if (::access(port_file.c_str(), R_OK) == 0) {
      // The server writes the file atomically (rename), so one read sees the whole line.
      auto ports = ParsePortFile(ReadFileOrEmpty(port_file));
      if (!ports.ok()) return ports.status();
      p->grpc_port_ = ports->first;
      p->metrics_port_ = ports->second;
      return p;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  return absl::DeadlineExceededError(absl::StrCat("no port file after ", absl::FormatDuration(options.start_timeout),
                                                  "; log:\n", Tail(p->Log(), 4000)));
}

}  // namespace cab_it
