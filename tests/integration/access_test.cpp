// Access control with real users: the socket's owner, group and mode, and the repository's admin
// group. The tests create users and groups (useradd, groupadd) and run the `atoll` command as
// them with runuser, so they need root; elsewhere they are skipped and say why. The users stay
// after the tests (creating them is idempotent), so that parallel test processes never race
// over /etc/passwd.
#include <fcntl.h>
#include <grp.h>
#include <pwd.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <array>
#include <cstdio>
#include <filesystem>
#include <nlohmann/json.hpp>
#include <string>

#include "common/unique_fd.h"
#include "test_daemon.h"

namespace atl::testing {
namespace {

using ::testing::HasSubstr;
namespace fs = std::filesystem;

constexpr char kAdmins[] = "atolltest-admins";
constexpr char kClients[] = "atolltest-clients";
constexpr char kAdmin[] = "atolltest-admin";
constexpr char kAdmin2[] = "atolltest-admin2";
constexpr char kClient[] = "atolltest-client";
constexpr char kOther[] = "atolltest-other";

struct Result {
  int status = -1;  // exit status, or -1 if it did not exit normally
  std::string output;
};

// Runs a shell command, returning its exit status and stdout+stderr.
Result Shell(const std::string& command) {
  Result r;
  FILE* pipe = ::popen((command + " 2>&1").c_str(), "r");
  if (pipe == nullptr) return r;
  std::array<char, 4096> chunk;
  size_t n;
  while ((n = std::fread(chunk.data(), 1, chunk.size(), pipe)) > 0)
    r.output.append(chunk.data(), n);
  int status = ::pclose(pipe);
  r.status = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  return r;
}

std::string Quote(const std::string& s) { return "'" + s + "'"; }

// `atoll ARGS` as `user`, with the daemon's socket and repository.
Result AtollAs(const std::string& user, const TestDaemon& daemon, const std::string& args) {
  return Shell("runuser -u " + user + " -- env ATOLL_SOCKET=" + Quote(daemon.socket()) +
               " ATOLL_REPOSITORY=" + Quote(daemon.repository()) + " " +
               Quote(TestDaemon::CliPath()) + " " + args);
}

uid_t Uid(const char* user) {
  const passwd* p = ::getpwnam(user);
  return p != nullptr ? p->pw_uid : static_cast<uid_t>(-1);
}

gid_t Gid(const char* group) {
  const ::group* g = ::getgrnam(group);
  return g != nullptr ? g->gr_gid : static_cast<gid_t>(-1);
}

class Access : public ::testing::Test {
 protected:
  void SetUp() override {
    if (::geteuid() != 0) GTEST_SKIP() << "needs root to create users and run clients as them";
    if (Shell("command -v useradd && command -v groupadd && command -v runuser").status != 0) {
      GTEST_SKIP() << "needs useradd, groupadd and runuser (Debian: passwd, util-linux)";
    }
    // One process at a time edits /etc/passwd and /etc/group.
    UniqueFd lock(::open("/tmp/atoll-access-test.lock", O_RDWR | O_CREAT | O_CLOEXEC, 0600));
    ASSERT_TRUE(lock.valid());
    ASSERT_EQ(::flock(lock.get(), LOCK_EX), 0);
    for (const char* group : {kAdmins, kClients}) {
      ASSERT_EQ(Shell(std::string("groupadd -f ") + group).status, 0);
    }
    struct User {
      const char* name;
      const char* groups;
    };
    for (User u : {User{kAdmin, kAdmins}, User{kAdmin2, kAdmins}, User{kClient, kClients},
                   User{kOther, ""}}) {
      if (Uid(u.name) == static_cast<uid_t>(-1)) {
        Result made =
            Shell(std::string("useradd --no-create-home --shell /usr/sbin/nologin ") +
                  (u.groups[0] != '\0' ? std::string("-G ") + u.groups + " " : "") + u.name);
        ASSERT_EQ(made.status, 0) << made.output;
      }
    }
    Result runs = Shell("runuser -u " + std::string(kOther) + " -- " +
                        Quote(TestDaemon::CliPath()) + " --help");
    if (runs.status != 0) {
      GTEST_SKIP() << "another user cannot run " << TestDaemon::CliPath()
                   << " (is the build tree readable by everyone?): " << runs.output;
    }
  }

  // A daemon whose folder other users may enter (mkdtemp makes it 0700).
  static std::unique_ptr<TestDaemon> StartDaemon(const std::string& config) {
    TestDaemon::Options options;
    options.install = {"vector"};
    options.config_json = config;
    options.set_environment = false;
    auto daemon = std::make_unique<TestDaemon>(options);
    ::chmod(daemon->folder().c_str(), 0755);
    return daemon;
  }
};

TEST_F(Access, SocketOwnerGroupAndModeAreApplied) {
  auto daemon = StartDaemon(nlohmann::json{
      {"socket_owner", kAdmin},
      {"socket_group", kClients},
      {"socket_mode", "0660"}}.dump());
  struct stat st;
  ASSERT_EQ(::stat(daemon->socket().c_str(), &st), 0);
  EXPECT_EQ(st.st_uid, Uid(kAdmin));
  EXPECT_EQ(st.st_gid, Gid(kClients));
  EXPECT_EQ(st.st_mode & 07777, 0660u);

  // A member of the socket's group may connect; its owner too; anyone else is refused clearly.
  Result member = AtollAs(kClient, *daemon, "status --json");
  EXPECT_EQ(member.status, 0) << member.output;
  EXPECT_THAT(member.output, HasSubstr("\"connections\""));
  Result owner = AtollAs(kAdmin, *daemon, "status --json");
  EXPECT_EQ(owner.status, 0) << owner.output;
  Result other = AtollAs(kOther, *daemon, "status");
  EXPECT_EQ(other.status, 4) << other.output;
  EXPECT_THAT(other.output, HasSubstr("permission denied"));
}

TEST_F(Access, UnknownSocketOwnerOrGroupStopsTheDaemonWithTheField) {
  for (const char* field : {"socket_owner", "socket_group", "admin_group"}) {
    std::string folder = fs::temp_directory_path() / ("atoll-access-" + std::to_string(::getpid()));
    fs::create_directories(folder);
    std::string config = folder + "/atolld.json";
    FILE* f = std::fopen(config.c_str(), "w");
    ASSERT_NE(f, nullptr);
    std::fputs(nlohmann::json{{field, "no-such-name-atolltest"}}.dump().c_str(), f);
    std::fclose(f);
    std::string atolld = fs::path(TestDaemon::CliPath()).parent_path() / "atolld";
    Result r = Shell(Quote(atolld) + " --config " + Quote(config) + " --socket " +
                     Quote(folder + "/s.sock") + " --repository " + Quote(folder + "/repo"));
    EXPECT_EQ(r.status, 2) << field << ": " << r.output;
    EXPECT_THAT(r.output, HasSubstr(field));
    EXPECT_THAT(r.output, HasSubstr("no-such-name-atolltest"));
    fs::remove_all(folder);
  }
}

TEST_F(Access, OnlyTheAdminGroupInstallsAndRemoves) {
  auto daemon = StartDaemon(nlohmann::json{{"admin_group", kAdmins}}.dump());
  const std::string repo = daemon->repository();
  struct stat st;
  ASSERT_EQ(::stat(repo.c_str(), &st), 0);
  EXPECT_EQ(st.st_gid, Gid(kAdmins));
  EXPECT_EQ(st.st_mode & 07777, 02775u);

  const std::string testing = Quote(TestDaemon::AcceleratorFolder("testing"));
  // Anyone else is refused, with the group named.
  Result install = AtollAs(kOther, *daemon, "install " + testing);
  EXPECT_EQ(install.status, 4) << install.output;
  EXPECT_THAT(install.output, HasSubstr(kAdmins));
  Result remove = AtollAs(kClient, *daemon, "remove vector");
  EXPECT_EQ(remove.status, 4) << remove.output;
  EXPECT_THAT(remove.output, HasSubstr("admin_group"));
  // The folder's permissions enforce it, not the command: writing directly fails too.
  Result direct = Shell("runuser -u " + std::string(kOther) + " -- mkdir " + Quote(repo + "/x"));
  EXPECT_NE(direct.status, 0) << direct.output;
  EXPECT_FALSE(fs::exists(repo + "/x"));
  Result listed = AtollAs(kOther, *daemon, "list --json");  // reading stays open to all
  EXPECT_EQ(listed.status, 0) << listed.output;
  EXPECT_THAT(listed.output, HasSubstr("vector.addition"));

  // An admin installs; another admin removes it, and what root installed.
  install = AtollAs(kAdmin, *daemon, "install " + testing);
  ASSERT_EQ(install.status, 0) << install.output;
  EXPECT_THAT(install.output, HasSubstr("testing.noop"));
  remove = AtollAs(kAdmin2, *daemon, "remove testing");
  EXPECT_EQ(remove.status, 0) << remove.output;
  remove = AtollAs(kAdmin2, *daemon, "remove vector");
  EXPECT_EQ(remove.status, 0) << remove.output;
  install = AtollAs(kAdmin2, *daemon, "install " + testing);
  EXPECT_EQ(install.status, 0) << install.output;

  // The daemon follows the changes and runs what the admin installed.
  Result run;
  for (int i = 0; i < 100; ++i) {
    run = AtollAs(kAdmin, *daemon, "run testing.noop");
    if (run.status == 0) break;
    ::usleep(50000);
  }
  EXPECT_EQ(run.status, 0) << run.output;
  // Root may always.
  Result as_root = Shell("env ATOLL_REPOSITORY=" + Quote(repo) + " " +
                         Quote(TestDaemon::CliPath()) + " remove testing");
  EXPECT_EQ(as_root.status, 0) << as_root.output;
}

}  // namespace
}  // namespace atl::testing
