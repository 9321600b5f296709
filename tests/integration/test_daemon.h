// Starts a real atolld for a test: a temporary socket and repository, the cpu backend from the
// build tree, and the bundled and testing accelerators installed. Not thread-safe.
#pragma once

#include <sys/types.h>

#include <string>
#include <vector>

namespace atl::testing {

class TestDaemon {
 public:
  struct Options {
    std::vector<std::string> install = {"vector", "vector_int", "vision", "testing"};
    std::string config_json = "{}";  // extra configuration merged into the file
    std::vector<std::string> extra_args;
    bool set_environment = true;  // export ATOLL_SOCKET for the client library
  };

  TestDaemon();
  explicit TestDaemon(Options options);
  ~TestDaemon();  // stops the daemon (SIGTERM, then SIGKILL) and removes the folders

  const std::string& socket() const { return socket_; }
  const std::string& repository() const { return repository_; }
  const std::string& folder() const { return folder_; }
  pid_t pid() const { return pid_; }
  std::string log() const;  // what the daemon wrote to stderr

  // Sends SIGTERM and waits; returns the exit status (or -1).
  int Stop();

  static std::string AcceleratorFolder(const std::string& name);
  static std::string CliPath();

 private:
  std::string folder_, socket_, repository_, log_path_;
  pid_t pid_ = -1;
};

}  // namespace atl::testing
