#include "test_daemon.h"

#include <signal.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <filesystem>

#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>
#include <stdexcept>
#include <thread>

#include "repository/repository.h"

namespace atl::testing {

namespace fs = std::filesystem;

std::string TestDaemon::AcceleratorFolder(const std::string& name) {
  std::string base = ATOLL_TEST_ACCELERATOR_DIR;
  return base + "/" + name;
}

std::string TestDaemon::CliPath() { return ATOLL_TEST_CLI; }

TestDaemon::TestDaemon() : TestDaemon(Options{}) {}

TestDaemon::TestDaemon(Options options) {
  char templ[] = "/tmp/atoll-test-XXXXXX";
  if (::mkdtemp(templ) == nullptr) throw std::runtime_error("mkdtemp failed");
  folder_ = templ;
  socket_ = folder_ + "/atolld.sock";
  repository_ = folder_ + "/repository";
  log_path_ = folder_ + "/atolld.log";
  repository::Repository repo(repository_);
  for (const auto& name : options.install) {
    auto entry = repo.Install(AcceleratorFolder(name));
    if (!entry.ok()) throw std::runtime_error("install " + name + ": " + entry.status().message());
  }
  for (const auto& folder : options.install_folders) {
    auto entry = repo.Install(folder);
    if (!entry.ok()) {
      throw std::runtime_error("install " + folder + ": " + entry.status().message());
    }
  }
  std::string config_path = folder_ + "/atolld.json";
  std::string config_json = options.config_json;
  // The polling variant of a test binary (ctest's *_polling entries) sets this, so the I/O
  // thread's poll runs on hosts whose core count turns it off by default.
  if (const char* spin = std::getenv("ATOLL_TEST_IO_SPIN_US"); spin != nullptr && *spin != '\0') {
    nlohmann::json config = nlohmann::json::parse(config_json);
    if (!config.contains("io_spin_us")) config["io_spin_us"] = std::stoul(spin);
    config_json = config.dump();
  }
  // The socket-only variant (ctest's *_socket_only entries) turns the shared rings off.
  if (const char* rings = std::getenv("ATOLL_TEST_SHARED_RINGS");
      rings != nullptr && *rings == '0') {
    nlohmann::json config = nlohmann::json::parse(config_json);
    if (!config.contains("shared_rings")) config["shared_rings"] = false;
    config_json = config.dump();
  }
  std::ofstream(config_path) << config_json;

  args_ = {ATOLL_TEST_ATOLLD, "--config",       config_path,
           "--socket",        socket_,          "--repository",
           repository_,       "--backend-dir",  ATOLL_TEST_BACKEND_DIR,
           "--log-level",     options.log_level};
  // The build's other plugins (opencl) would add devices the cpu tests do not expect; a test that
  // wants one enables it with a later --backend in extra_args, which overrides this.
  args_.insert(args_.end(), {"--backend", R"(opencl={"enabled": false})"});
  for (const auto& a : options.extra_args) args_.push_back(a);
  Launch(/*append_log=*/false);
  if (options.set_environment) ::setenv("ATOLL_SOCKET", socket_.c_str(), 1);
}

void TestDaemon::Launch(bool append_log) {
  pid_ = ::fork();
  if (pid_ == 0) {
    std::vector<char*> argv;
    for (auto& a : args_) argv.push_back(a.data());
    argv.push_back(nullptr);
    FILE* log = std::freopen(log_path_.c_str(), append_log ? "a" : "w", stderr);
    // Stdout too: a daemon left behind by a test that crashed must not hold ctest's pipe open,
    // which would stall ctest until its timeout.
    if (log != nullptr) ::dup2(STDERR_FILENO, STDOUT_FILENO);
    ::execv(argv[0], argv.data());
    std::_Exit(127);
  }
  // Ready when the socket accepts a connection; sanitized builds start slowly.
  for (int i = 0; i < 3000; ++i) {
    int status = 0;
    if (::waitpid(pid_, &status, WNOHANG) == pid_) {
      pid_ = -1;
      throw std::runtime_error("atolld exited at start: " + log());
    }
    int fd = ::socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0);
    sockaddr_un addr{};
    addr.sun_family = AF_UNIX;
    std::snprintf(addr.sun_path, sizeof(addr.sun_path), "%s", socket_.c_str());
    bool up = ::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) == 0;
    ::close(fd);
    if (up) return;
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  throw std::runtime_error("atolld did not accept connections within 30 s: " + log());
}

int TestDaemon::Kill(int signal) {
  if (pid_ <= 0) return -1;
  ::kill(pid_, signal);
  int status = 0;
  ::waitpid(pid_, &status, 0);
  pid_ = -1;
  return status;
}

void TestDaemon::Restart() {
  if (pid_ > 0) Stop();
  Launch(/*append_log=*/true);
}

std::string TestDaemon::log() const {
  std::ifstream in(log_path_);
  std::stringstream s;
  s << in.rdbuf();
  return s.str();
}

int TestDaemon::Stop() {
  if (pid_ <= 0) return -1;
  ::kill(pid_, SIGTERM);
  int status = 0;
  for (int i = 0; i < 1000; ++i) {
    if (::waitpid(pid_, &status, WNOHANG) == pid_) {
      pid_ = -1;
      return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  ::kill(pid_, SIGKILL);
  ::waitpid(pid_, &status, 0);
  pid_ = -1;
  return -1;
}

TestDaemon::~TestDaemon() {
  Stop();
  std::error_code ec;
  fs::remove_all(folder_, ec);
}

}  // namespace atl::testing
