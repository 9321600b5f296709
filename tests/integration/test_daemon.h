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
    std::vector<std::string> install_folders;  // more accelerator folders, by path
    std::string config_json = "{}";            // extra configuration merged into the file
    std::vector<std::string> extra_args;
    bool set_environment = true;      // export ATOLL_SOCKET for the client library
    std::string log_level = "debug";  // floods and soaks log less
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
  // Sends `signal` (SIGKILL: a crash) and waits; returns the wait status. The socket file, the
  // repository and the configuration stay for Restart.
  int Kill(int signal);
  // Starts the daemon again with the same flags, configuration, socket and repository, and waits
  // until it accepts connections. The log is appended to.
  void Restart();

  static std::string AcceleratorFolder(const std::string& name);
  static std::string CliPath();

 private:
  void Launch(bool append_log);

  std::string folder_, socket_, repository_, log_path_;
  std::vector<std::string> args_;
  pid_t pid_ = -1;
};

}  // namespace atl::testing
