// Tests of the `atoll` command line: the real binary run as a subprocess against temporary
// repositories and, where it needs one, a real atolld (TestDaemon). Every assertion on a
// subprocess prints its command line, exit code, stdout and stderr when it fails.
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <iostream>
#include <map>
#include <nlohmann/json.hpp>
#include <ostream>
#include <random>
#include <regex>
#include <string>
#include <thread>
#include <vector>

#include "test_daemon.h"

extern char** environ;

namespace atl::testing {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;
using ::testing::ContainsRegex;
using ::testing::HasSubstr;
using ::testing::IsEmpty;
using ::testing::StartsWith;

// What a subprocess did.
struct Outcome {
  std::string command;  // for messages
  int exit_code = -1;   // -1 when a signal ended it
  bool timed_out = false;
  std::string out, err;
};

std::ostream& operator<<(std::ostream& os, const Outcome& o) {
  os << "\n$ " << o.command << "\nexit code " << o.exit_code << (o.timed_out ? " (timed out)" : "")
     << "\n--- stdout ---\n"
     << o.out << "\n--- stderr ---\n"
     << o.err << "\n--------------";
  return os;
}

// Runs `argv` (argv[0] found on PATH when it has no '/') in `cwd` with the test's environment
// plus `env`, stdin from /dev/null, and collects its output. Kills it after 20 s.
Outcome Spawn(const std::vector<std::string>& argv, const std::map<std::string, std::string>& env,
              const std::string& cwd) {
  Outcome outcome;
  for (const auto& a : argv) outcome.command += (outcome.command.empty() ? "" : " ") + a;
  std::vector<std::string> environment;
  for (char** e = environ; *e != nullptr; ++e) {
    std::string entry = *e;
    if (!env.contains(entry.substr(0, entry.find('=')))) environment.push_back(entry);
  }
  for (const auto& [key, value] : env) environment.push_back(key + "=" + value);
  std::vector<char*> args, envp;
  std::vector<std::string> argv_copy = argv;
  for (auto& a : argv_copy) args.push_back(a.data());
  args.push_back(nullptr);
  for (auto& e : environment) envp.push_back(e.data());
  envp.push_back(nullptr);

  int out_pipe[2], err_pipe[2];
  if (::pipe2(out_pipe, O_CLOEXEC) != 0 || ::pipe2(err_pipe, O_CLOEXEC) != 0) {
    outcome.err = std::string("pipe2: ") + std::strerror(errno);
    return outcome;
  }
  pid_t pid = ::fork();
  if (pid == 0) {
    int null = ::open("/dev/null", O_RDONLY);
    ::dup2(null, 0);
    ::dup2(out_pipe[1], 1);  // dup2 leaves the new descriptor open across exec
    ::dup2(err_pipe[1], 2);
    if (!cwd.empty() && ::chdir(cwd.c_str()) != 0) ::_exit(126);
    ::execvpe(args[0], args.data(), envp.data());
    ::_exit(127);
  }
  ::close(out_pipe[1]);
  ::close(err_pipe[1]);
  auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(20);
  pollfd fds[2] = {{out_pipe[0], POLLIN, 0}, {err_pipe[0], POLLIN, 0}};
  std::string* sinks[2] = {&outcome.out, &outcome.err};
  int open_fds = 2;
  while (open_fds > 0) {
    auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
        deadline - std::chrono::steady_clock::now());
    if (left.count() <= 0) {
      outcome.timed_out = true;
      ::kill(pid, SIGKILL);
      break;
    }
    if (::poll(fds, 2, static_cast<int>(left.count())) < 0 && errno != EINTR) break;
    for (int i = 0; i < 2; ++i) {
      if (fds[i].fd < 0 || fds[i].revents == 0) continue;
      char buf[4096];
      ssize_t n = ::read(fds[i].fd, buf, sizeof(buf));
      if (n > 0) {
        sinks[i]->append(buf, static_cast<size_t>(n));
      } else if (n == 0 || errno != EINTR) {
        ::close(fds[i].fd);
        fds[i].fd = -1;
        --open_fds;
      }
    }
  }
  for (auto& f : fds) {
    if (f.fd >= 0) ::close(f.fd);
  }
  int status = 0;
  ::waitpid(pid, &status, 0);
  outcome.exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  return outcome;
}

template <typename T>
void WriteValues(const std::string& path, const std::vector<T>& values) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out.write(reinterpret_cast<const char*>(values.data()),
            static_cast<std::streamsize>(values.size() * sizeof(T)));
  ASSERT_TRUE(out.good()) << path;
}

// The file's bytes as T values; empty (with a failure) when it is missing or its size is not a
// whole number of values.
template <typename T>
std::vector<T> ReadValues(const std::string& path) {
  std::error_code ec;
  uintmax_t size = fs::file_size(path, ec);
  if (ec || size % sizeof(T) != 0) {
    ADD_FAILURE() << "'" << path << "' is missing or holds " << size
                  << " bytes, not a whole number of " << sizeof(T) << "-byte values";
    return {};
  }
  std::vector<T> values(size / sizeof(T));
  std::ifstream in(path, std::ios::binary);
  if (!in.read(reinterpret_cast<char*>(values.data()), static_cast<std::streamsize>(size))) {
    ADD_FAILURE() << "cannot read '" << path << "'";
    return {};
  }
  return values;
}

json ParseJson(const Outcome& o) {
  json parsed = json::parse(o.out, nullptr, /*allow_exceptions=*/false);
  EXPECT_FALSE(parsed.is_discarded()) << "stdout is not JSON" << o;
  return parsed;
}

const json* FindById(const json& entries, const std::string& id) {
  for (const auto& e : entries) {
    if (e.value("id", "") == id) return &e;
  }
  return nullptr;
}

// filter2d as the vision manifest describes it: pixels outside the image read as 0, the result
// rounds half away from zero and clamps to 0..255.
std::vector<uint8_t> Filter2dReference(const std::vector<int16_t>& coefficients, int size,
                                       float factor, int bias, int width, int height,
                                       const std::vector<uint8_t>& src) {
  std::vector<uint8_t> dst(static_cast<size_t>(width) * height);
  const int radius = size / 2;
  for (int y = 0; y < height; ++y) {
    for (int x = 0; x < width; ++x) {
      int sum = 0;
      for (int i = 0; i < size; ++i) {
        for (int j = 0; j < size; ++j) {
          int yy = y + i - radius, xx = x + j - radius;
          if (yy < 0 || yy >= height || xx < 0 || xx >= width) continue;
          sum += coefficients[i * size + j] * src[yy * width + xx];
        }
      }
      double value = std::round(sum * static_cast<double>(factor) + bias);
      dst[y * width + x] = static_cast<uint8_t>(std::clamp(value, 0.0, 255.0));
    }
  }
  return dst;
}

// A temporary folder (the subprocesses' working directory), a repository in it, and a socket
// where no daemon listens, so that no test reaches a daemon it did not start.
class CliTest : public ::testing::Test {
 protected:
  void SetUp() override {
    char templ[] = "/tmp/atoll-cli-test-XXXXXX";
    ASSERT_NE(::mkdtemp(templ), nullptr);
    dir_ = templ;
    env_["ATOLL_REPOSITORY"] = dir_ + "/repository";
    env_["ATOLL_SOCKET"] = dir_ + "/no-daemon.sock";
  }
  void TearDown() override {
    std::error_code ec;
    fs::remove_all(dir_, ec);
  }

  Outcome Atoll(std::vector<std::string> args) const {
    args.insert(args.begin(), TestDaemon::CliPath());
    return Spawn(args, env_, dir_);
  }

  // Repeats `args` until `done` holds for its outcome or `budget` passes; returns the last
  // outcome. For changes that the daemon notices on its own.
  Outcome AtollUntil(const std::vector<std::string>& args,
                     const std::function<bool(const Outcome&)>& done,
                     std::chrono::milliseconds budget = std::chrono::seconds(2)) const {
    auto deadline = std::chrono::steady_clock::now() + budget;
    while (true) {
      Outcome o = Atoll(args);
      if (done(o) || std::chrono::steady_clock::now() > deadline) return o;
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
  }

  std::string Path(const std::string& name) const { return dir_ + "/" + name; }

  static std::string TestData(const std::string& name) {
    return std::string(ATOLL_TEST_DATA_DIR) + "/" + name;
  }

  std::string dir_;
  std::map<std::string, std::string> env_;
};

// The installed checksum prefix that `atoll install` printed: "installed ID VERSION (BACKEND)
// CHECKSUM12: ACCELERATORS...".
std::string InstalledChecksum(const Outcome& o) {
  std::smatch m;
  std::regex re("installed \\S+ \\S+ \\(\\S+\\) ([0-9a-f]{12}):");
  if (!std::regex_search(o.out, m, re)) {
    ADD_FAILURE() << "no checksum in the install output" << o;
    return "";
  }
  return m[1];
}

TEST_F(CliTest, HelpOfEverySubcommandSaysWhatItDoes) {
  Outcome top = Atoll({"--help"});
  EXPECT_EQ(top.exit_code, 0) << top;
  EXPECT_THAT(top.out, HasSubstr("install accelerators, inspect the daemon and run accelerators"))
      << top;
  EXPECT_THAT(top.out, HasSubstr("$ATOLL_SOCKET")) << top;
  EXPECT_THAT(top.out, HasSubstr("$ATOLL_REPOSITORY")) << top;

  const std::vector<std::pair<std::string, std::string>> purposes = {
      {"daemon", "run atolld (arguments after -- go to it)"},
      {"install", "install binaries: folders with a bitstream.json, or tarballs"},
      {"list", "list installed accelerators and their signatures"},
      {"remove", "remove binaries by bitstream id, id@version, or checksum"},
      {"devices", "list the daemon's devices"},
      {"status", "show the daemon's state and counters"},
      {"run", "call an accelerator: arrays as @FILE"},
  };
  for (const auto& [subcommand, purpose] : purposes) {
    EXPECT_THAT(top.out, ContainsRegex("\n +" + subcommand + " ")) << subcommand << top;
    Outcome help = Atoll({subcommand, "--help"});
    EXPECT_EQ(help.exit_code, 0) << help;
    EXPECT_THAT(help.out, HasSubstr(purpose)) << help;
    EXPECT_THAT(help.out, HasSubstr("Usage: atoll " + subcommand)) << help;
    EXPECT_THAT(help.err, IsEmpty()) << help;
  }
  EXPECT_THAT(Atoll({"run", "--help"}).out,
              HasSubstr("Example: atoll run vector.addition @a.bin @b.bin @c.bin 1024"));
}

TEST_F(CliTest, NoSubcommandFailsWithUsage) {
  Outcome o = Atoll({});
  EXPECT_NE(o.exit_code, 0) << o;
  EXPECT_THAT(o.err, HasSubstr("A subcommand is required")) << o;
  EXPECT_THAT(o.err, HasSubstr("--help")) << o;

  Outcome unknown = Atoll({"frobnicate"});
  EXPECT_NE(unknown.exit_code, 0) << unknown;
  EXPECT_THAT(unknown.err, HasSubstr("--help")) << unknown;
}

TEST_F(CliTest, ExtraArgumentsAreRefused) {
  Outcome o = Atoll({"list", "junk"});
  EXPECT_NE(o.exit_code, 0) << o;
  EXPECT_THAT(o.err, HasSubstr("not expected: junk")) << o;
  EXPECT_THAT(o.out, IsEmpty()) << o;

  Outcome option = Atoll({"status", "--frobnicate"});
  EXPECT_NE(option.exit_code, 0) << option;
  EXPECT_THAT(option.err, HasSubstr("--frobnicate")) << option;
}

TEST_F(CliTest, AtolldHelpAndVersion) {
  Outcome help = Spawn({ATOLL_TEST_ATOLLD, "--help"}, env_, dir_);
  EXPECT_EQ(help.exit_code, 0) << help;
  EXPECT_THAT(help.out, HasSubstr("atolld: the Atoll daemon")) << help;
  for (const char* flag : {"--config", "--socket", "--repository", "--backend-dir", "--version"}) {
    EXPECT_THAT(help.out, HasSubstr(flag)) << help;
  }
  Outcome version = Spawn({ATOLL_TEST_ATOLLD, "--version"}, env_, dir_);
  EXPECT_EQ(version.exit_code, 0) << version;
  EXPECT_THAT(version.out, ContainsRegex("^atolld [0-9]+\\.[0-9]+\\.[0-9]+\n$")) << version;
}

TEST_F(CliTest, DaemonSubcommandPassesWhatFollowsDoubleDashToAtolld) {
  Outcome version = Atoll({"daemon", "--", "--version"});
  EXPECT_EQ(version.exit_code, 0) << version;
  EXPECT_EQ(version.out, Spawn({ATOLL_TEST_ATOLLD, "--version"}, env_, dir_).out) << version;

  // --print-config shows what atolld would run with. Flags beat the environment, which beats the
  // configuration file; `atoll daemon` must not impose a default of its own.
  std::ofstream(Path("atolld.json"))
      << json{{"repository", Path("from-config")}, {"socket", Path("from-config.sock")}}.dump();
  Outcome from_env = Atoll({"daemon", "--", "--config", Path("atolld.json"), "--print-config"});
  ASSERT_EQ(from_env.exit_code, 0) << from_env;
  json config = ParseJson(from_env);
  EXPECT_EQ(config.value("repository", ""), env_["ATOLL_REPOSITORY"]) << from_env;
  EXPECT_EQ(config.value("socket", ""), env_["ATOLL_SOCKET"]) << from_env;

  auto saved = env_;
  env_["ATOLL_REPOSITORY"] = "";  // empty counts as unset
  env_["ATOLL_SOCKET"] = "";
  Outcome from_file = Atoll({"daemon", "--", "--config", Path("atolld.json"), "--print-config"});
  env_ = saved;
  ASSERT_EQ(from_file.exit_code, 0) << from_file;
  config = ParseJson(from_file);
  EXPECT_EQ(config.value("repository", ""), Path("from-config")) << from_file;
  EXPECT_EQ(config.value("socket", ""), Path("from-config.sock")) << from_file;

  Outcome flags = Atoll({"-r", Path("from-flag"), "-s", Path("from-flag.sock"), "daemon", "--",
                         "--config", Path("atolld.json"), "--print-config"});
  ASSERT_EQ(flags.exit_code, 0) << flags;
  config = ParseJson(flags);
  EXPECT_EQ(config.value("repository", ""), Path("from-flag")) << flags;
  EXPECT_EQ(config.value("socket", ""), Path("from-flag.sock")) << flags;
}

TEST_F(CliTest, InstallListAndRemove) {
  Outcome empty = Atoll({"list"});
  EXPECT_EQ(empty.exit_code, 0) << empty;
  EXPECT_THAT(empty.out, HasSubstr("no accelerators installed")) << empty;

  // A folder, a tarball of a folder, and the path of a bitstream.json.
  Outcome vector = Atoll({"install", TestDaemon::AcceleratorFolder("vector")});
  ASSERT_EQ(vector.exit_code, 0) << vector;
  EXPECT_THAT(vector.out, HasSubstr("installed vector 1.0 (cpu)")) << vector;
  EXPECT_THAT(vector.out, HasSubstr(": vector.addition vector.subtraction\n")) << vector;

  fs::path accelerators = fs::path(TestDaemon::AcceleratorFolder("vector_int")).parent_path();
  Outcome tar =
      Spawn({"tar", "czf", Path("vector_int.tar.gz"), "-C", accelerators.string(), "vector_int"},
            env_, dir_);
  ASSERT_EQ(tar.exit_code, 0) << tar;
  Outcome vector_int = Atoll({"install", "vector_int.tar.gz"});
  ASSERT_EQ(vector_int.exit_code, 0) << vector_int;
  EXPECT_THAT(vector_int.out, HasSubstr("installed vector.int 1.0 (cpu)")) << vector_int;

  Outcome vision = Atoll({"install", TestDaemon::AcceleratorFolder("vision") + "/bitstream.json"});
  ASSERT_EQ(vision.exit_code, 0) << vision;
  EXPECT_THAT(vision.out, HasSubstr(": vision.filter2d\n")) << vision;

  const std::string vector_sum = InstalledChecksum(vector);
  const std::string vector_int_sum = InstalledChecksum(vector_int);
  const std::string vision_sum = InstalledChecksum(vision);

  Outcome table = Atoll({"list"});
  ASSERT_EQ(table.exit_code, 0) << table;
  EXPECT_THAT(table.out, StartsWith("ACCELERATOR")) << table;
  EXPECT_THAT(table.out,
              ContainsRegex("vector\\.addition +1\\.0 +cpu +" + vector_sum +
                            " +vector\\.addition\\(float\\* a \\[r\\], float\\* b \\[r\\], "
                            "float\\* c \\[w\\], int size\\)\n"))
      << table;
  EXPECT_THAT(table.out, HasSubstr("vector.subtraction(float* a [r], float* b [r], float* c [w], "
                                   "int size)"))
      << table;
  EXPECT_THAT(table.out, ContainsRegex("vector\\.int\\.addition +1\\.0 +cpu +" + vector_int_sum +
                                       " +vector\\.int\\.addition\\(int\\* a \\[r\\]"))
      << table;
  EXPECT_THAT(table.out,
              HasSubstr(vision_sum + "  vision.filter2d(short* coefficients [r], int size, float "
                                     "factor, short bias, int width, int height, unsigned char* "
                                     "src [r], unsigned char* dst [w])\n"))
      << table;

  Outcome listed = Atoll({"list", "--json"});
  ASSERT_EQ(listed.exit_code, 0) << listed;
  json all = ParseJson(listed);
  ASSERT_TRUE(all.is_array()) << listed;
  EXPECT_EQ(all.size(), 5u) << listed;
  for (const auto& [id, checksum] :
       std::vector<std::pair<std::string, std::string>>{{"vector.addition", vector_sum},
                                                        {"vector.subtraction", vector_sum},
                                                        {"vector.int.addition", vector_int_sum},
                                                        {"vector.int.subtraction", vector_int_sum},
                                                        {"vision.filter2d", vision_sum}}) {
    const json* entry = FindById(all, id);
    ASSERT_NE(entry, nullptr) << id << listed;
    EXPECT_EQ(entry->value("version", ""), "1.0") << id;
    EXPECT_THAT(entry->value("checksum", ""), ContainsRegex("^[0-9a-f]{64}$")) << id;
    EXPECT_THAT(entry->value("checksum", ""), StartsWith(checksum)) << id;
    EXPECT_EQ((*entry)["platform"].value("backend", ""), "cpu") << id;
    EXPECT_TRUE(fs::is_regular_file(entry->value("binary", ""))) << id;
  }
  const json& add = (*FindById(all, "vector.addition"))["arguments"];
  ASSERT_EQ(add.size(), 4u) << add.dump();
  EXPECT_EQ(add[0], (json{{"name", "a"}, {"type", "float*"}, {"access", "r"}, {"length", "size"}}));
  EXPECT_EQ(add[2].value("access", ""), "w");
  EXPECT_EQ(add[3], (json{{"name", "size"}, {"type", "int"}}));  // scalars have no access
  const json& filter = (*FindById(all, "vision.filter2d"))["arguments"];
  ASSERT_EQ(filter.size(), 8u) << filter.dump();
  EXPECT_EQ(filter[6].value("type", ""), "unsigned char*");
  EXPECT_EQ(filter[6].value("length", ""), "width*height");
  EXPECT_EQ(filter[7].value("access", ""), "w");

  // By id: "vector" must not take "vector.int" with it.
  Outcome by_id = Atoll({"remove", "vector"});
  ASSERT_EQ(by_id.exit_code, 0) << by_id;
  EXPECT_EQ(by_id.out, "removed vector 1.0 " + vector_sum + "\n") << by_id;
  all = ParseJson(Atoll({"list", "--json"}));
  EXPECT_EQ(FindById(all, "vector.addition"), nullptr) << all.dump();
  EXPECT_NE(FindById(all, "vector.int.addition"), nullptr) << all.dump();

  Outcome by_version = Atoll({"remove", "vision@1.0"});
  ASSERT_EQ(by_version.exit_code, 0) << by_version;
  EXPECT_EQ(by_version.out, "removed vision 1.0 " + vision_sum + "\n") << by_version;

  Outcome by_checksum = Atoll({"remove", vector_int_sum.substr(0, 10)});
  ASSERT_EQ(by_checksum.exit_code, 0) << by_checksum;
  EXPECT_EQ(by_checksum.out, "removed vector.int 1.0 " + vector_int_sum + "\n") << by_checksum;

  Outcome none = Atoll({"list"});
  EXPECT_THAT(none.out, HasSubstr("no accelerators installed in " + Path("repository"))) << none;
  EXPECT_EQ(ParseJson(Atoll({"list", "--json"})), json::array());
}

TEST_F(CliTest, RepositoryFlagOverridesTheEnvironment) {
  Outcome o = Atoll({"-r", Path("other"), "install", TestDaemon::AcceleratorFolder("vector")});
  ASSERT_EQ(o.exit_code, 0) << o;
  EXPECT_THAT(Atoll({"list"}).out, HasSubstr("no accelerators installed"));
  EXPECT_THAT(Atoll({"--repository", Path("other"), "list"}).out, HasSubstr("vector.addition"));
}

TEST_F(CliTest, InstallingTheSameBinaryTwiceFails) {
  Outcome first = Atoll({"install", TestDaemon::AcceleratorFolder("vector")});
  ASSERT_EQ(first.exit_code, 0) << first;
  Outcome again = Atoll({"install", TestDaemon::AcceleratorFolder("vector")});
  EXPECT_NE(again.exit_code, 0) << again;
  EXPECT_THAT(again.err, HasSubstr("is already installed as " + InstalledChecksum(first))) << again;
  EXPECT_THAT(again.err, HasSubstr("(vector@1.0)")) << again;
}

TEST_F(CliTest, RemovingWhatIsNotInstalledFails) {
  Outcome installed = Atoll({"install", TestDaemon::AcceleratorFolder("vector")});
  ASSERT_EQ(installed.exit_code, 0) << installed;

  Outcome id = Atoll({"remove", "vision"});
  EXPECT_EQ(id.exit_code, 1) << id;
  EXPECT_THAT(id.err, HasSubstr("nothing installed matches 'vision'")) << id;
  EXPECT_THAT(id.out, IsEmpty()) << id;

  Outcome version = Atoll({"remove", "vector@2.0"});
  EXPECT_EQ(version.exit_code, 1) << version;
  EXPECT_THAT(version.err, HasSubstr("vector has no version '2.0'")) << version;

  Outcome checksum = Atoll({"remove", "0123456789abcdef"});
  EXPECT_EQ(checksum.exit_code, 1) << checksum;
  EXPECT_THAT(checksum.err, HasSubstr("'0123456789abcdef'")) << checksum;

  Outcome short_prefix = Atoll({"remove", "1234"});
  EXPECT_EQ(short_prefix.exit_code, 1) << short_prefix;
  EXPECT_THAT(short_prefix.err, HasSubstr("too short for a checksum prefix")) << short_prefix;

  // Nothing was removed along the way.
  EXPECT_THAT(Atoll({"list"}).out, HasSubstr("vector.addition"));
}

TEST_F(CliTest, MalformedManifestNamesTheField) {
  Outcome access = Atoll({"install", TestData("bad_access")});
  EXPECT_EQ(access.exit_code, 1) << access;
  EXPECT_THAT(access.err, HasSubstr("kernels[0].arguments[0].access")) << access;
  EXPECT_THAT(access.err, HasSubstr("must be \"r\", \"w\" or \"rw\", got \"x\"")) << access;
  EXPECT_THAT(access.out, IsEmpty()) << access;

  Outcome type = Atoll({"install", TestData("bad_type")});
  EXPECT_EQ(type.exit_code, 1) << type;
  EXPECT_THAT(type.err, HasSubstr("kernels[0].arguments[1].type: unknown type 'flaot*'")) << type;
  EXPECT_THAT(type.err, HasSubstr("did you mean 'float*'?")) << type;

  Outcome syntax = Atoll({"install", TestData("not_json")});
  EXPECT_EQ(syntax.exit_code, 1) << syntax;
  EXPECT_THAT(syntax.err, HasSubstr("not valid JSON")) << syntax;
  EXPECT_THAT(syntax.err, HasSubstr("line 5")) << syntax;

  // One bad path among good ones: the good ones install, the exit code still says it failed.
  Outcome mixed =
      Atoll({"install", TestData("bad_access"), TestDaemon::AcceleratorFolder("vector")});
  EXPECT_EQ(mixed.exit_code, 1) << mixed;
  EXPECT_THAT(mixed.err, HasSubstr("kernels[0].arguments[0].access")) << mixed;
  EXPECT_THAT(mixed.out, HasSubstr("installed vector 1.0")) << mixed;

  json all = ParseJson(Atoll({"list", "--json"}));
  ASSERT_EQ(all.size(), 2u) << all.dump();  // vector's two kernels and nothing else
  EXPECT_NE(FindById(all, "vector.addition"), nullptr) << all.dump();
}

TEST_F(CliTest, MissingOrEmptyBinaryNamesThePath) {
  Outcome missing = Atoll({"install", TestData("missing_binary")});
  EXPECT_EQ(missing.exit_code, 1) << missing;
  EXPECT_THAT(missing.err, HasSubstr(TestData("missing_binary") + "/vector.so")) << missing;
  EXPECT_THAT(missing.err, HasSubstr("is missing")) << missing;

  Outcome empty = Atoll({"install", TestData("empty_binary")});
  EXPECT_EQ(empty.exit_code, 1) << empty;
  EXPECT_THAT(empty.err, HasSubstr(TestData("empty_binary") + "/vector.so")) << empty;
  EXPECT_THAT(empty.err, HasSubstr("empty")) << empty;

  Outcome nowhere = Atoll({"install", Path("no-such-folder")});
  EXPECT_NE(nowhere.exit_code, 0) << nowhere;
  EXPECT_THAT(nowhere.err, HasSubstr("no-such-folder")) << nowhere;

  EXPECT_THAT(Atoll({"list"}).out, HasSubstr("no accelerators installed"));
}

TEST_F(CliTest, WithoutADaemonSaysHowToStartIt) {
  for (const std::vector<std::string>& args :
       {std::vector<std::string>{"devices"},
        {"status", "--json"},
        {"run", "vector.addition", "@a.bin", "@b.bin", "@c.bin", "4"}}) {
    Outcome o = Atoll(args);
    EXPECT_EQ(o.exit_code, 3) << o;  // UNAVAILABLE
    EXPECT_THAT(o.err, HasSubstr("the Atoll daemon is not running")) << o;
    EXPECT_THAT(o.err, HasSubstr(Path("no-daemon.sock"))) << o;
    EXPECT_THAT(o.err, HasSubstr("Start it with `atolld`")) << o;
    EXPECT_THAT(o.out, IsEmpty()) << o;
  }
}

// Installing and removing reach a running daemon without a restart.
TEST_F(CliTest, InstallAndRemoveNeedNoDaemonRestart) {
  TestDaemon::Options options;
  options.install = {"vector", "testing"};
  options.set_environment = false;
  TestDaemon daemon(options);
  env_["ATOLL_SOCKET"] = daemon.socket();
  env_["ATOLL_REPOSITORY"] = daemon.repository();

  const int n = 1000;
  std::vector<int32_t> a(n), b(n);
  for (int i = 0; i < n; ++i) {
    a[i] = i * 7919 - 2000000000;
    b[i] = 2000000000 - 3 * i;
  }
  WriteValues(Path("a.bin"), a);
  WriteValues(Path("b.bin"), b);
  const std::vector<std::string> run = {"run",    "vector.int.addition", "@a.bin", "@b.bin",
                                        "@c.bin", std::to_string(n)};

  Outcome before = Atoll(run);
  EXPECT_EQ(before.exit_code, 1) << before;
  EXPECT_THAT(before.err, HasSubstr("no accelerator 'vector.int.addition' is installed")) << before;

  Outcome install = Atoll({"install", TestDaemon::AcceleratorFolder("vector_int")});
  ASSERT_EQ(install.exit_code, 0) << install;
  auto start = std::chrono::steady_clock::now();
  Outcome after = AtollUntil(run, [](const Outcome& o) { return o.exit_code == 0; });
  ASSERT_EQ(after.exit_code, 0) << after << "\n" << daemon.log();
  std::cerr
      << "the daemon ran the installed accelerator after "
      << std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - start).count()
      << " ms\n";
  std::vector<int32_t> c = ReadValues<int32_t>(Path("c.bin"));
  ASSERT_EQ(c.size(), static_cast<size_t>(n));
  for (int i = 0; i < n; ++i) {
    ASSERT_EQ(c[i], static_cast<int32_t>(static_cast<uint32_t>(a[i]) + static_cast<uint32_t>(b[i])))
        << i;
  }

  Outcome remove = Atoll({"remove", "vector.int"});
  ASSERT_EQ(remove.exit_code, 0) << remove;
  Outcome gone = AtollUntil(run, [](const Outcome& o) { return o.exit_code != 0; });
  EXPECT_EQ(gone.exit_code, 1) << gone << "\n" << daemon.log();
  EXPECT_THAT(gone.err, HasSubstr("no accelerator 'vector.int.addition' is installed")) << gone;
  EXPECT_EQ(daemon.Stop(), 0) << daemon.log();  // the same daemon throughout, and it stops cleanly
}

// One daemon for the suite, with the bundled and testing accelerators.
class CliWithDaemonTest : public CliTest {
 protected:
  static void SetUpTestSuite() {
    TestDaemon::Options options;
    options.set_environment = false;
    daemon_ = new TestDaemon(options);
  }
  static void TearDownTestSuite() {
    delete daemon_;
    daemon_ = nullptr;
  }
  void SetUp() override {
    CliTest::SetUp();
    env_["ATOLL_SOCKET"] = daemon_->socket();
    env_["ATOLL_REPOSITORY"] = daemon_->repository();
  }
  void TearDown() override {
    if (HasFailure()) std::cerr << "--- atolld's log ---\n" << daemon_->log() << "\n";
    CliTest::TearDown();
  }

  // Random floats in a.bin and b.bin; returns them.
  std::pair<std::vector<float>, std::vector<float>> WriteInputs(int n) {
    std::vector<float> a(n), b(n);
    std::mt19937 rng(n);
    std::uniform_real_distribution<float> dist(-1000, 1000);
    for (int i = 0; i < n; ++i) {
      a[i] = dist(rng);
      b[i] = dist(rng);
    }
    WriteValues(Path("a.bin"), a);
    WriteValues(Path("b.bin"), b);
    return {a, b};
  }

  json DaemonStatus() const {
    Outcome o = Atoll({"status", "--json"});
    EXPECT_EQ(o.exit_code, 0) << o;
    return ParseJson(o);
  }

  static TestDaemon* daemon_;
};
TestDaemon* CliWithDaemonTest::daemon_ = nullptr;

TEST_F(CliWithDaemonTest, DevicesListsTheCpuDevice) {
  Outcome table = Atoll({"devices"});
  ASSERT_EQ(table.exit_code, 0) << table;
  EXPECT_THAT(table.out, ContainsRegex("^# +BACKEND +NAME +PLATFORM +MEMORY +CUS +LOADED\n"))
      << table;
  EXPECT_THAT(table.out, ContainsRegex("\n0 +cpu +")) << table;

  Outcome listed = Atoll({"devices", "--json"});
  ASSERT_EQ(listed.exit_code, 0) << listed;
  json devices = ParseJson(listed);
  ASSERT_TRUE(devices.is_array()) << listed;
  ASSERT_EQ(devices.size(), 1u) << listed;
  const json& cpu = devices[0];
  EXPECT_EQ(cpu.value("backend", ""), "cpu") << listed;
  EXPECT_EQ(cpu.value("index", -1), 0) << listed;
  ASSERT_TRUE(cpu.contains("compute_units") && cpu["compute_units"].is_number_integer()) << listed;
  EXPECT_GE(cpu["compute_units"].get<int>(), 1) << listed;
  EXPECT_TRUE(cpu["loaded"].is_array()) << listed;

  // --socket overrides $ATOLL_SOCKET.
  env_["ATOLL_SOCKET"] = Path("no-daemon.sock");
  Outcome flag = Atoll({"--socket", daemon_->socket(), "devices", "--json"});
  EXPECT_EQ(flag.exit_code, 0) << flag;
  EXPECT_EQ(ParseJson(flag), devices) << flag;
}

TEST_F(CliWithDaemonTest, StatusCountersMoveAfterRequests) {
  Outcome text = Atoll({"status"});
  ASSERT_EQ(text.exit_code, 0) << text;
  EXPECT_THAT(text.out, HasSubstr("(pid " + std::to_string(daemon_->pid()) + ")")) << text;
  EXPECT_THAT(text.out, HasSubstr("repository:  " + daemon_->repository())) << text;
  EXPECT_THAT(text.out, ContainsRegex("requests: +[0-9]+ completed, [0-9]+ failed")) << text;
  EXPECT_THAT(text.out, HasSubstr("devices:     1\n")) << text;

  json before = DaemonStatus();
  EXPECT_EQ(before.value("pid", 0), daemon_->pid());
  EXPECT_EQ(before["repository"].value("root", ""), daemon_->repository());
  EXPECT_EQ("atolld " + before.value("version", "") + "\n",
            Spawn({ATOLL_TEST_ATOLLD, "--version"}, env_, dir_).out);
  const json& requests = before["requests"];
  ASSERT_TRUE(requests.contains("completed") && requests.contains("rejected")) << before.dump(2);

  WriteInputs(16);
  Outcome ok = Atoll({"run", "-q", "vector.addition", "@a.bin", "@b.bin", "@c.bin", "16"});
  ASSERT_EQ(ok.exit_code, 0) << ok;
  EXPECT_THAT(ok.out, IsEmpty()) << ok;  // -q
  Outcome unknown = Atoll({"run", "vector.nothing"});
  EXPECT_NE(unknown.exit_code, 0) << unknown;

  json after = DaemonStatus();
  EXPECT_EQ(after["requests"].value("completed", -1), requests.value("completed", -1) + 1)
      << before.dump(2) << after.dump(2);
  EXPECT_EQ(after["requests"].value("rejected", -1), requests.value("rejected", -1) + 1)
      << before.dump(2) << after.dump(2);
}

TEST_F(CliWithDaemonTest, RunVectorAdditionWritesTheSum) {
  auto [a, b] = WriteInputs(1024);
  Outcome o = Atoll({"run", "vector.addition", "@a.bin", "@b.bin", "@c.bin", "1024"});
  ASSERT_EQ(o.exit_code, 0) << o;
  EXPECT_THAT(o.out, ContainsRegex("^vector.addition: completed in [0-9.e+-]+ ms\n$")) << o;
  // The output's size comes from the length rule "size": 1024 floats.
  std::vector<float> c = ReadValues<float>(Path("c.bin"));
  ASSERT_EQ(c.size(), 1024u);
  for (size_t i = 0; i < c.size(); ++i) ASSERT_EQ(c[i], a[i] + b[i]) << i;

  // An existing, longer output file is replaced, not partly overwritten.
  WriteValues(Path("d.bin"), std::vector<float>(5000, 7.0f));
  Outcome sub = Atoll({"run", "-q", "vector.subtraction", "@a.bin", "@b.bin", "@d.bin", "1024"});
  ASSERT_EQ(sub.exit_code, 0) << sub;
  std::vector<float> d = ReadValues<float>(Path("d.bin"));
  ASSERT_EQ(d.size(), 1024u);
  for (size_t i = 0; i < d.size(); ++i) ASSERT_EQ(d[i], a[i] - b[i]) << i;
}

TEST_F(CliWithDaemonTest, RunOutputSizeCanBeGivenInBytes) {
  auto [a, b] = WriteInputs(256);
  // 256 elements add, into an output of 300 floats: the rest stays zero.
  Outcome o = Atoll(
      {"run", "-q", "vector.addition", "@a.bin", "@b.bin", "@" + Path("c.bin") + ":1200", "256"});
  ASSERT_EQ(o.exit_code, 0) << o;
  std::vector<float> c = ReadValues<float>(Path("c.bin"));
  ASSERT_EQ(c.size(), 300u);
  for (size_t i = 0; i < 256; ++i) ASSERT_EQ(c[i], a[i] + b[i]) << i;
  for (size_t i = 256; i < 300; ++i) ASSERT_EQ(c[i], 0.0f) << i;

  // Too small for the length rule: the daemon names the argument and what it needs.
  Outcome small = Atoll({"run", "vector.addition", "@a.bin", "@b.bin", "@c.bin:8", "4"});
  EXPECT_EQ(small.exit_code, 1) << small;
  EXPECT_THAT(small.err, HasSubstr("argument 2 'c' must hold at least size = 4 elements")) << small;
}

TEST_F(CliWithDaemonTest, RunWithTheWrongArgumentCountPrintsTheUsage) {
  WriteInputs(4);
  Outcome o = Atoll({"run", "vector.addition", "@a.bin", "@b.bin", "@c.bin"});
  EXPECT_EQ(o.exit_code, 1) << o;
  EXPECT_THAT(o.err, HasSubstr("vector.addition takes 4 arguments, got 3")) << o;
  EXPECT_THAT(o.err, HasSubstr("Usage: atoll run vector.addition @a.bin @b.bin @c.bin <size>"))
      << o;
  EXPECT_FALSE(fs::exists(Path("c.bin")));
}

TEST_F(CliWithDaemonTest, RunWithABadArgumentNamesIt) {
  WriteInputs(4);
  Outcome word = Atoll({"run", "vector.addition", "@a.bin", "@b.bin", "@c.bin", "abc"});
  EXPECT_EQ(word.exit_code, 1) << word;
  EXPECT_THAT(word.err, HasSubstr("argument 3 'size' (int): 'abc' is not a int")) << word;

  Outcome too_big = Atoll({"run", "vector.addition", "@a.bin", "@b.bin", "@c.bin", "4294967296"});
  EXPECT_EQ(too_big.exit_code, 1) << too_big;
  EXPECT_THAT(too_big.err, HasSubstr("argument 3 'size'")) << too_big;

  Outcome not_a_file = Atoll({"run", "vector.addition", "@a.bin", "b.bin", "@c.bin", "4"});
  EXPECT_EQ(not_a_file.exit_code, 1) << not_a_file;
  EXPECT_THAT(not_a_file.err, HasSubstr("argument 1 'b' (float*): an array is given as @FILE"))
      << not_a_file;

  Outcome missing = Atoll({"run", "vector.addition", "@a.bin", "@nope.bin", "@c.bin", "4"});
  EXPECT_EQ(missing.exit_code, 1) << missing;
  EXPECT_THAT(missing.err, HasSubstr("argument 1 'b' (float*): cannot read 'nope.bin'")) << missing;
  EXPECT_FALSE(fs::exists(Path("c.bin")));
}

TEST_F(CliWithDaemonTest, RunOfAnUnknownAcceleratorGetsTheDaemonsSuggestion) {
  Outcome o = Atoll({"run", "vector.additon", "@a.bin"});
  EXPECT_EQ(o.exit_code, 1) << o;
  EXPECT_THAT(o.err, HasSubstr("no accelerator 'vector.additon' is installed; did you mean "
                               "'vector.addition'?"))
      << o;
}

TEST_F(CliWithDaemonTest, RunOfABinaryThatDoesNotLoadSaysWhy) {
  Outcome install = Atoll({"install", TestData("invalid_binary")});
  ASSERT_EQ(install.exit_code, 0) << install;
  Outcome o = AtollUntil({"run", "invalid.binary.noop"}, [](const Outcome& r) {
    return r.err.find("no accelerator") == std::string::npos;
  });
  EXPECT_EQ(o.exit_code, 1) << o;
  EXPECT_THAT(o.err, HasSubstr("invalid.so")) << o;
  EXPECT_THAT(o.err, HasSubstr("cannot be loaded")) << o;
  Outcome remove = Atoll({"remove", "invalid.binary"});
  EXPECT_EQ(remove.exit_code, 0) << remove;
}

TEST_F(CliWithDaemonTest, RunFilter2dWithA5x5KernelMatchesTheReference) {
  const int width = 53, height = 31, size = 5;
  const float factor = 1.0f / 16;
  const int bias = -6;
  // A sharpening kernel (weights sum to 16) made lopsided, so that a transposed or mirrored
  // window would show: on random pixels it saturates at both ends and keeps many between.
  std::vector<int16_t> coefficients(size * size);
  for (int i = 0; i < size; ++i) {
    for (int j = 0; j < size; ++j) {
      coefficients[i * size + j] = static_cast<int16_t>(i == 2 && j == 2 ? 40 : (j - i) % 3 - 1);
    }
  }
  std::mt19937 rng(5);
  std::vector<uint8_t> src(width * height);
  for (auto& p : src) p = static_cast<uint8_t>(std::uniform_int_distribution<>(0, 255)(rng));
  WriteValues(Path("coefficients.bin"), coefficients);
  WriteValues(Path("src.bin"), src);

  Outcome o = Atoll({"run", "vision.filter2d", "@coefficients.bin", std::to_string(size), "0.0625",
                     std::to_string(bias), std::to_string(width), std::to_string(height),
                     "@src.bin", "@dst.bin"});
  ASSERT_EQ(o.exit_code, 0) << o;
  std::vector<uint8_t> dst = ReadValues<uint8_t>(Path("dst.bin"));
  std::vector<uint8_t> expected =
      Filter2dReference(coefficients, size, factor, bias, width, height, src);
  ASSERT_EQ(dst.size(), expected.size());
  for (size_t i = 0; i < dst.size(); ++i) {
    ASSERT_EQ(int{dst[i]}, int{expected[i]}) << "x " << i % width << ", y " << i / width;
  }
  // The clamp was exercised at both ends, and many pixels lie between.
  auto count = [&](auto predicate) { return std::count_if(dst.begin(), dst.end(), predicate); };
  EXPECT_GT(count([](uint8_t v) { return v == 0; }), 0);
  EXPECT_GT(count([](uint8_t v) { return v == 255; }), 0);
  EXPECT_GT(count([](uint8_t v) { return v > 0 && v < 255; }), width * height / 5);
}

// Manifests may write types as C and OpenCL code do: "const short *", "ushort const", "uchar*".
// The daemon reports them as written; `atoll run` has to read them as the manifest parser does.
TEST_F(CliWithDaemonTest, RunReadsQualifiedAndOpenClTypeNames) {
  fs::create_directory(Path("typed"));
  fs::copy_file(TestData("typed_vision/bitstream.json"), Path("typed/bitstream.json"));
  fs::copy_file(TestDaemon::AcceleratorFolder("vision") + "/vision.so", Path("typed/vision.so"));
  Outcome install = Atoll({"install", "typed"});
  ASSERT_EQ(install.exit_code, 0) << install;

  const int width = 19, height = 7, size = 3;
  std::vector<int16_t> coefficients = {1, 2, 1, 2, 4, 2, 1, 2, 1};
  std::vector<uint8_t> src(width * height);
  for (size_t i = 0; i < src.size(); ++i) src[i] = static_cast<uint8_t>((i * 37) % 251);
  WriteValues(Path("coefficients.bin"), coefficients);
  WriteValues(Path("src.bin"), src);
  // bias is a ushort in this manifest and a short in the kernel: 65535 arrives as -1.
  const std::vector<std::string> run = {
      "run",   "typed.vision.filter2d", "@coefficients.bin",    std::to_string(size), "0.0625",
      "65535", std::to_string(width),   std::to_string(height), "@src.bin",           "@dst.bin"};
  Outcome o = AtollUntil(
      run, [](const Outcome& r) { return r.err.find("no accelerator") == std::string::npos; });
  EXPECT_EQ(o.exit_code, 0) << o;
  if (o.exit_code == 0) {
    std::vector<uint8_t> dst = ReadValues<uint8_t>(Path("dst.bin"));
    EXPECT_EQ(dst, Filter2dReference(coefficients, size, 0.0625f, -1, width, height, src));
  }

  // The same kernel still checks its scalars by their declared types.
  std::vector<std::string> negative = run;
  negative[5] = "-1";  // a ushort
  Outcome refused = Atoll(negative);
  EXPECT_EQ(refused.exit_code, 1) << refused;
  EXPECT_THAT(refused.err, HasSubstr("argument 3 'bias'")) << refused;
  EXPECT_THAT(refused.err, HasSubstr("unsigned")) << refused;
  std::vector<std::string> fraction = run;
  fraction[3] = "1.5";  // a const int
  Outcome not_int = Atoll(fraction);
  EXPECT_EQ(not_int.exit_code, 1) << not_int;
  EXPECT_THAT(not_int.err, HasSubstr("argument 1 'size'")) << not_int;

  Outcome remove = Atoll({"remove", "typed.vision"});
  EXPECT_EQ(remove.exit_code, 0) << remove;
}

}  // namespace
}  // namespace atl::testing
