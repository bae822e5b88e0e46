#include "replica_process.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <spawn.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstring>
#include <fstream>
#include <regex>
#include <sstream>
#include <thread>

#include "absl/strings/str_cat.h"

extern char** environ;

namespace cab::deploy_test {
namespace {

bool ReadPortFile(const std::string& path, int* grpc, int* metrics) {
  std::ifstream in(path);
  std::string line;
  if (!std::getline(in, line)) return false;
  return std::sscanf(line.c_str(), "grpc=%d metrics=%d", grpc, metrics) == 2;
}

}  // namespace

ReplicaProcess::~ReplicaProcess() {
  if (Running()) {
    ::kill(pid_, SIGKILL);
    WaitExit(10);
  }
}

absl::Status ReplicaProcess::Start(const std::vector<std::string>& extra_args, double timeout_s) {
  const std::string port_file = workdir_ + "/" + name_ + ".ports";
  const std::string log = workdir_ + "/" + name_ + ".log";
  ::unlink(port_file.c_str());
  std::vector<std::string> args = {exe_, "--listen=127.0.0.1:0", "--metrics_listen=127.0.0.1:0",
                                   "--port_file=" + port_file};
  args.insert(args.end(), extra_args.begin(), extra_args.end());
  std::vector<char*> argv;
  for (auto& a : args) argv.push_back(a.data());
  argv.push_back(nullptr);

  posix_spawn_file_actions_t fa;
  posix_spawn_file_actions_init(&fa);
  posix_spawn_file_actions_addopen(&fa, 1, log.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
  posix_spawn_file_actions_adddup2(&fa, 1, 2);
  int rc = posix_spawn(&pid_, exe_.c_str(), &fa, nullptr, argv.data(), environ);
  posix_spawn_file_actions_destroy(&fa);
  if (rc != 0) return absl::InternalError(absl::StrCat("spawn ", exe_, ": ", std::strerror(rc)));

  auto end = std::chrono::steady_clock::now() + std::chrono::milliseconds(static_cast<int>(timeout_s * 1000));
  while (std::chrono::steady_clock::now() < end) {
    if (ReadPortFile(port_file, &grpc_port_, &metrics_port_)) return absl::OkStatus();
    if (!Running()) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  return absl::UnavailableError(absl::StrCat(name_, " did not write ", port_file, "; log:\n", LogTail(2000)));
}

void ReplicaProcess::Signal(int sig) {
  if (Running()) ::kill(pid_, sig);
}

bool ReplicaProcess::Running() { return pid_ > 0 && WaitExit(0) == -1; }

int ReplicaProcess::WaitExit(double timeout_s) {
  if (pid_ <= 0) return exit_code_;
  auto end = std::chrono::steady_clock::now() + std::chrono::milliseconds(static_cast<int>(timeout_s * 1000));
  for (;;) {
    int status = 0;
    pid_t r = ::waitpid(pid_, &status, WNOHANG);
    if (r == pid_) {
      exit_code_ = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
      pid_ = -1;
      return exit_code_;
    }
    if (std::chrono::steady_clock::now() >= end) return -1;
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
}

absl::StatusOr<std::string> ReplicaProcess::Scrape() const { return HttpGet(metrics_port_, "/metrics", 5); }

std::string ReplicaProcess::LogTail(size_t bytes) const {
  std::ifstream in(workdir_ + "/" + name_ + ".log");
  std::stringstream s;
  s << in.rdbuf();
  std::string all = s.str();
  return all.size() > bytes ? all.substr(all.size() - bytes) : all;
}

double SumSamples(const std::string& text, const std::string& name,
                  const std::map<std::string, std::string>& labels) {
  double sum = 0;
  std::istringstream in(text);
  std::string line;
  static const std::regex sample(R"(^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{([^}]*)\})?\s+(\S+))");
  static const std::regex label(R"re(([a-zA-Z_][a-zA-Z0-9_]*)="([^"]*)")re");
  while (std::getline(in, line)) {
    std::smatch m;
    if (line.empty() || line[0] == '#' || !std::regex_search(line, m, sample) || m[1] != name) continue;
    std::map<std::string, std::string> have;
    std::string body = m[3];
    for (std::sregex_iterator it(body.begin(), body.end(), label), e; it != e; ++it)
      have[(*it)[1]] = (*it)[2];
    bool match = true;
    for (const auto& [k, v] : labels) match = match && have.count(k) && have[k] == v;
    if (match) sum += std::stod(m[4]);
  }
  return sum;
}

absl::StatusOr<std::string> HttpGet(int port, const std::string& path, double timeout_s) {
  int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  if (fd < 0) return absl::InternalError("socket");
  timeval tv{static_cast<time_t>(timeout_s), static_cast<suseconds_t>((timeout_s - static_cast<int>(timeout_s)) * 1e6)};
  ::setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  ::setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(static_cast<uint16_t>(port));
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0) {
    ::close(fd);
    return absl::UnavailableError(absl::StrCat("connect 127.0.0.1:", port));
  }
  std::string req = "GET " + path + " HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n";
  ::send(fd, req.data(), req.size(), 0);
  std::string resp;
  char buf[8192];
  ssize_t n;
  while ((n = ::recv(fd, buf, sizeof buf, 0)) > 0) resp.append(buf, static_cast<size_t>(n));
  ::close(fd);
  size_t body = resp.find("\r\n\r\n");
  if (resp.rfind("HTTP/1.", 0) != 0 || body == std::string::npos)
    return absl::UnavailableError(absl::StrCat("bad HTTP answer from 127.0.0.1:", port));
  if (resp.find(" 200 ") > body) return absl::UnavailableError("HTTP status not 200: " + resp.substr(0, resp.find("\r\n")));
  return resp.substr(body + 4);
}

}  // namespace cab::deploy_test
