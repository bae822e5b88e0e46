#include "server_process.h"

#include <fcntl.h>
#include <signal.h>
#include <stdlib.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <fstream>
#include <sstream>
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

std::string ReadFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

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
  p->log_path_ = p->dir_ + "/server.log";
  const std::string port_file = p->dir_ + "/ports";

  std::vector<std::string> args = {ServerBinary()};
  if (options.default_addresses) {
    args.push_back("--listen=127.0.0.1:0");
    args.push_back("--metrics_listen=127.0.0.1:0");
    args.push_back("--backend=cpu");
  }
  args.push_back("--port_file=" + port_file);
  for (const auto& f : options.flags) args.push_back(f);

  const pid_t parent = ::getpid();
  const pid_t pid = ::fork();
  if (pid < 0) return absl::InternalError(absl::StrCat("fork: ", std::strerror(errno)));
  if (pid == 0) {
    // Child: die with the test process so a crashed test leaves no server behind.
    ::prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (::getppid() != parent) ::_exit(127);
    const int fd = ::open(p->log_path_.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
    if (fd >= 0) {
      ::dup2(fd, 1);
      ::dup2(fd, 2);
      ::close(fd);
    }
    for (const auto& [k, v] : options.env) ::setenv(k.c_str(), v.c_str(), 1);
    std::vector<char*> argv;
    for (auto& a : args) argv.push_back(const_cast<char*>(a.c_str()));
    argv.push_back(nullptr);
    ::execv(argv[0], argv.data());
    std::fprintf(stderr, "execv %s: %s\n", argv[0], std::strerror(errno));
    ::_exit(127);
  }
  p->pid_ = pid;

  const absl::Time deadline = absl::Now() + options.start_timeout;
  while (absl::Now() < deadline) {
    if (!p->Running()) {
      return absl::InternalError(absl::StrCat("cab-server exited with ", p->exit_code_,
                                              " before serving; log:\n", Tail(p->Log(), 4000)));
    }
    if (::access(port_file.c_str(), R_OK) == 0) {
      const std::string line = ReadFile(port_file);
      auto ports = ParsePortFile(line);
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

ServerProcess::~ServerProcess() {
  if (pid_ > 0 && Running()) {
    ::kill(pid_, SIGKILL);
    WaitExit(absl::Seconds(10));
  }
}

void ServerProcess::Signal(int sig) const {
  if (pid_ > 0) ::kill(pid_, sig);
}

bool ServerProcess::Running() {
  if (reaped_) return false;
  int status = 0;
  const pid_t r = ::waitpid(pid_, &status, WNOHANG);
  if (r == 0) return true;
  reaped_ = true;
  if (r == pid_) exit_code_ = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
  return false;
}

std::optional<int> ServerProcess::WaitExit(absl::Duration timeout) {
  const absl::Time deadline = absl::Now() + timeout;
  while (Running()) {
    if (absl::Now() >= deadline) return std::nullopt;
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  return exit_code_;
}

std::string ServerProcess::Log() const { return ReadFile(log_path_); }

}  // namespace cab_it
