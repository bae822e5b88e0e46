#include "server_launcher.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <fstream>
#include <sstream>
#include <thread>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"

#ifndef CAB_SERVER_BINARY
#error "CAB_SERVER_BINARY must name the cab-server under test"
#endif

namespace cab_client_test {

std::string MakeTempDir() {
  std::string pattern = "/tmp/cab-client-test-XXXXXX";
  char* dir = mkdtemp(pattern.data());
  return dir ? std::string(dir) : std::string("/tmp");
}

absl::StatusOr<std::unique_ptr<ServerLauncher>> ServerLauncher::Start(const std::vector<std::string>& extra) {
  std::unique_ptr<ServerLauncher> s(new ServerLauncher());
  s->dir_ = MakeTempDir();
  const std::string port_file = s->dir_ + "/ports", log = s->dir_ + "/server.log";
  std::vector<std::string> argv = {CAB_SERVER_BINARY, "--listen=127.0.0.1:0", "--metrics_listen=127.0.0.1:0",
                                   "--port_file=" + port_file, "--backend=cpu", "--threads=2",
                                   "--drain_grace_s=1"};
  argv.insert(argv.end(), extra.begin(), extra.end());
  pid_t pid = fork();
  if (pid < 0) return absl::InternalError("fork failed");
  if (pid == 0) {
    FILE* out = std::freopen(log.c_str(), "w", stdout);
    (void)out;
    dup2(STDOUT_FILENO, STDERR_FILENO);
    std::vector<char*> args;
    for (auto& a : argv) args.push_back(a.data());
    args.push_back(nullptr);
    execv(args[0], args.data());
    _exit(127);
  }
  s->pid_ = pid;
  for (int i = 0; i < 300; ++i) {  // up to 30 s
    std::ifstream in(port_file);
    std::string line;
    if (in && std::getline(in, line) && absl::StrContains(line, "metrics=")) {
      for (absl::string_view kv : absl::StrSplit(line, ' ')) {
        std::pair<std::string, std::string> p = absl::StrSplit(kv, '=');
        int v = 0;
        if (!absl::SimpleAtoi(p.second, &v)) continue;
        if (p.first == "grpc") s->grpc_port_ = v;
        if (p.first == "metrics") s->metrics_port_ = v;
      }
      if (s->grpc_port_ > 0) return s;
    }
    int status;
    if (waitpid(pid, &status, WNOHANG) == pid) {
      s->pid_ = -1;
      return absl::InternalError(absl::StrCat("cab-server exited early:\n", s->Log()));
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  return absl::DeadlineExceededError(absl::StrCat("cab-server wrote no port file:\n", s->Log()));
}

void ServerLauncher::Kill(int sig) {
  if (pid_ <= 0) return;
  ::kill(pid_, sig);
  int status;
  waitpid(pid_, &status, 0);
  pid_ = -1;
}

ServerLauncher::~ServerLauncher() { Kill(SIGKILL); }

std::string ServerLauncher::Log() const {
  std::ifstream in(dir_ + "/server.log");
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

absl::StatusOr<double> ScrapeMetric(int port, const std::string& name, const std::string& label_substring) {
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(static_cast<uint16_t>(port));
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0) {
    close(fd);
    return absl::UnavailableError(absl::StrCat("metrics port ", port, ": connect failed"));
  }
  std::string req = "GET /metrics HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n";
  if (write(fd, req.data(), req.size()) != static_cast<ssize_t>(req.size())) {
    close(fd);
    return absl::UnavailableError("metrics: write failed");
  }
  std::string body;
  char buf[8192];
  ssize_t n;
  while ((n = read(fd, buf, sizeof buf)) > 0) body.append(buf, n);
  close(fd);
  double sum = 0;
  for (absl::string_view line : absl::StrSplit(body, '\n')) {
    if (line.empty() || line[0] == '#') continue;
    if (!absl::StartsWith(line, name)) continue;
    absl::string_view rest = line.substr(name.size());
    if (!rest.empty() && rest[0] != '{' && rest[0] != ' ') continue;  // a longer metric name
    if (!label_substring.empty() && !absl::StrContains(line, label_substring)) continue;
    double v;
    size_t sp = line.rfind(' ');
    if (sp != absl::string_view::npos && absl::SimpleAtod(line.substr(sp + 1), &v)) sum += v;
  }
  return sum;
}

}  // namespace cab_client_test
