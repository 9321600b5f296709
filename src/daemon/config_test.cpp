#include "daemon/config.h"

#include <unistd.h>

#include <gtest/gtest.h>

namespace atl::daemon {
namespace {

TEST(Config, EmptyObjectGivesDefaults) {
  auto c = ParseConfig("{}");
  ASSERT_TRUE(c.ok()) << c.status().ToString();
  EXPECT_EQ(c->socket_mode, 0666u);
  EXPECT_EQ(c->repository, "/var/lib/atoll/repository");
  EXPECT_EQ(c->log_level, "info");
}

TEST(Config, ReadsEveryField) {
  auto c = ParseConfig(R"({"socket": "/tmp/a.sock", "socket_mode": "0660",
    "repository": "/srv/repo", "backend_dirs": ["/x", "/y"],
    "backends": {"cpu": {"devices": 2}}, "log_level": "debug", "shutdown_grace_ms": 5,
    "max_connections": 7, "max_requests_per_connection": 9, "max_buffers_per_connection": 11})");
  ASSERT_TRUE(c.ok()) << c.status().ToString();
  EXPECT_EQ(c->socket, "/tmp/a.sock");
  EXPECT_EQ(c->socket_mode, 0660u);
  EXPECT_EQ(c->backend_dirs.size(), 2u);
  EXPECT_EQ(c->backends.at("cpu"), R"({"devices":2})");
  EXPECT_EQ(c->shutdown_grace_ms, 5u);
  EXPECT_EQ(c->max_connections, 7u);
  EXPECT_EQ(c->max_requests_per_connection, 9u);
  EXPECT_EQ(c->max_buffers_per_connection, 11u);
}

struct BadCase {
  const char* json;
  const char* must_mention;
};

TEST(Config, ErrorsNameTheField) {
  const BadCase cases[] = {
      {R"({"socket": 3})", "socket"},
      {R"({"socket_mode": "999"})", "socket_mode"},
      {R"({"socket_mode": 432})", "socket_mode"},
      {R"({"repository": ""})", "repository"},
      {R"({"backend_dirs": "/x"})", "backend_dirs"},
      {R"({"backend_dirs": [1]})", "backend_dirs[0]"},
      {R"({"backends": {"cpu": 1}})", "backends.cpu"},
      {R"({"log_level": "loud"})", "log_level"},
      {R"({"backends": {"cpu": {"enabled": "no"}}})", "backends.cpu.enabled"},
      {R"({"backends": {"cuda": {"isolate": "process"}}})", "backends.cuda.isolate"},
      {R"({"backends": {"cuda": {"isolate": true}}})", "backends.cuda.isolate"},
      {R"({"backends": {"cuda": {"launch_timeout_ms": -5}}})", "backends.cuda.launch_timeout_ms"},
      {R"({"backends": {"cuda": {"launch_timeout_ms": 1.5}}})", "backends.cuda.launch_timeout_ms"},
      {R"({"backends": {"cpu": {"isolate": "none", "launch_timeout_ms": 100}}})",
       "needs \"isolate\": \"device\""},
      {R"({"shutdown_grace_ms": -1})", "shutdown_grace_ms"},
      {R"({"max_connections": 0})", "max_connections"},
      {R"({"sockett": "/x"})", "sockett"},
      {R"([1, 2])", "object"},
      {R"({"socket": )", "not valid JSON"},
  };
  for (const auto& c : cases) {
    auto parsed = ParseConfig(c.json);
    ASSERT_FALSE(parsed.ok()) << c.json;
    EXPECT_EQ(parsed.status().code(), Code::kInvalidArgument);
    EXPECT_NE(parsed.status().message().find(c.must_mention), std::string::npos)
        << c.json << " -> " << parsed.status().message();
  }
}

TEST(Config, ReadsTheSchedulingFields) {
  auto c = ParseConfig(R"({
    "scheduler": {"policy": "fifo", "tenant_by": "process", "aging_starts": 4,
                  "default_weight": 2, "max_requests_in_flight": 100,
                  "max_device_memory_bytes": 4096},
    "tenants": [{"name": "research", "users": ["alice", 1001], "groups": ["ml"], "weight": 3,
                 "max_requests_in_flight": 10, "max_device_memory_bytes": 1024}],
    "devices": [{"device": "cpu:1", "mode": "exclusive", "users": ["alice"]},
                {"device": 0, "mode": "shared"}]})");
  ASSERT_TRUE(c.ok()) << c.status().ToString();
  EXPECT_EQ(c->scheduler.policy, "fifo");
  EXPECT_EQ(c->scheduler.tenant_by, "process");
  EXPECT_EQ(c->scheduler.aging_starts, 4u);
  EXPECT_EQ(c->scheduler.defaults.weight, 2u);
  EXPECT_EQ(c->scheduler.defaults.max_requests_in_flight, 100u);
  EXPECT_EQ(c->scheduler.defaults.max_device_memory_bytes, 4096u);
  ASSERT_EQ(c->tenants.size(), 1u);
  EXPECT_EQ(c->tenants[0].name, "research");
  EXPECT_EQ(c->tenants[0].users, (std::vector<std::string>{"alice", "1001"}));
  EXPECT_EQ(c->tenants[0].groups, (std::vector<std::string>{"ml"}));
  EXPECT_EQ(c->tenants[0].weight, 3u);
  EXPECT_EQ(c->tenants[0].max_requests_in_flight, 10u);
  EXPECT_EQ(c->tenants[0].max_device_memory_bytes, 1024u);
  ASSERT_EQ(c->devices.size(), 2u);
  EXPECT_EQ(c->devices[0].device, "cpu:1");
  EXPECT_TRUE(c->devices[0].exclusive);
  EXPECT_EQ(c->devices[0].users, (std::vector<std::string>{"alice"}));
  EXPECT_EQ(c->devices[1].device, "0");
  EXPECT_FALSE(c->devices[1].exclusive);

  auto again = ParseConfig(ConfigToJson(*c));
  ASSERT_TRUE(again.ok()) << again.status().ToString();
  EXPECT_EQ(again->tenants[0].users, c->tenants[0].users);
  EXPECT_EQ(again->devices[0].device, "cpu:1");
  EXPECT_EQ(again->scheduler.defaults.weight, 2u);

  auto defaults = ParseConfig("{}");
  ASSERT_TRUE(defaults.ok());
  EXPECT_EQ(defaults->scheduler.policy, "fair");
  EXPECT_EQ(defaults->scheduler.tenant_by, "user");
  EXPECT_EQ(defaults->scheduler.defaults.weight, 1u);
}

TEST(Config, SchedulingErrorsNameTheField) {
  const BadCase cases[] = {
      {R"({"scheduler": 1})", "'scheduler'"},
      {R"({"scheduler": {"policy": "lottery"}})", "'scheduler.policy'"},
      {R"({"scheduler": {"tenant_by": "pod"}})", "'scheduler.tenant_by'"},
      {R"({"scheduler": {"aging_starts": 0}})", "'scheduler.aging_starts'"},
      {R"({"scheduler": {"default_weight": 0}})", "'scheduler.default_weight'"},
      {R"({"scheduler": {"weight": 2}})", "'scheduler.weight': unknown field"},
      {R"({"tenants": {}})", "'tenants'"},
      {R"({"tenants": [{"users": ["a"]}]})", "'tenants[0].name'"},
      {R"({"tenants": [{"name": "a"}]})", "'tenants[0]': needs \"users\" or \"groups\""},
      {R"({"tenants": [{"name": "a", "users": [-1]}]})", "'tenants[0].users[0]'"},
      {R"({"tenants": [{"name": "a", "users": "alice"}]})", "'tenants[0].users'"},
      {R"({"tenants": [{"name": "a", "groups": ["g"], "weight": 0}]})", "'tenants[0].weight'"},
      {R"({"tenants": [{"name": "a", "groups": ["g"], "weight": 1.5}]})", "'tenants[0].weight'"},
      {R"({"tenants": [{"name": "a", "users": ["u"]}, {"name": "a", "users": ["v"]}]})",
       "'tenants[1].name'"},
      {R"({"tenants": [{"name": "a", "users": ["u"], "quota": 1}]})", "'tenants[0].quota'"},
      {R"({"devices": [{"mode": "shared"}]})", "'devices[0].device'"},
      {R"({"devices": [{"device": 0, "mode": "private"}]})", "'devices[0].mode'"},
      {R"({"devices": [{"device": 0, "mode": "exclusive"}]})", "'devices[0]': an exclusive"},
      {R"({"devices": [{"device": 0, "users": ["a"]}]})", "'devices[0]': \"users\""},
      {R"({"devices": [{"device": 0}, {"device": "0"}]})", "'devices[1].device'"},
  };
  for (const auto& c : cases) {
    auto parsed = ParseConfig(c.json);
    ASSERT_FALSE(parsed.ok()) << c.json;
    EXPECT_EQ(parsed.status().code(), Code::kInvalidArgument);
    EXPECT_NE(parsed.status().message().find(c.must_mention), std::string::npos)
        << c.json << " -> " << parsed.status().message();
  }
}

TEST(Config, MissingFileIsNotFound) {
  auto c = LoadConfig("/nonexistent/atolld.json");
  ASSERT_FALSE(c.ok());
  EXPECT_EQ(c.status().code(), Code::kNotFound);
  EXPECT_NE(c.status().message().find("/nonexistent/atolld.json"), std::string::npos);
}

TEST(Config, RoundTripsThroughJson) {
  auto c = ParseConfig(R"({"socket": "/tmp/s", "backends": {"cpu": {"devices": 3}}})");
  ASSERT_TRUE(c.ok());
  auto again = ParseConfig(ConfigToJson(*c));
  ASSERT_TRUE(again.ok()) << again.status().ToString();
  EXPECT_EQ(again->socket, "/tmp/s");
  EXPECT_EQ(again->backends.at("cpu"), R"({"devices":3})");
}

TEST(Config, ReadsTheHardeningFields) {
  auto c = ParseConfig(R"({"socket_owner": "atoll", "socket_group": "1234",
    "admin_group": "atoll-admin", "max_connections_per_uid": 3,
    "max_buffer_bytes_per_connection": 4096, "handshake_timeout_ms": 250,
    "max_unread_replies_per_connection": 8})");
  ASSERT_TRUE(c.ok()) << c.status().ToString();
  EXPECT_EQ(c->socket_owner, "atoll");
  EXPECT_EQ(c->socket_group, "1234");
  EXPECT_EQ(c->admin_group, "atoll-admin");
  EXPECT_EQ(c->max_connections_per_uid, 3u);
  EXPECT_EQ(c->max_buffer_bytes_per_connection, 4096u);
  EXPECT_EQ(c->handshake_timeout_ms, 250u);
  EXPECT_EQ(c->max_unread_replies_per_connection, 8u);
  auto again = ParseConfig(ConfigToJson(*c));
  ASSERT_TRUE(again.ok()) << again.status().ToString();
  EXPECT_EQ(again->admin_group, "atoll-admin");
  EXPECT_EQ(again->max_buffer_bytes_per_connection, 4096u);

  auto defaults = ParseConfig("{}");
  ASSERT_TRUE(defaults.ok());
  EXPECT_EQ(defaults->socket_owner, "");
  EXPECT_EQ(defaults->admin_group, "");
  EXPECT_EQ(defaults->max_connections_per_uid, 256u);
  EXPECT_EQ(defaults->max_buffer_bytes_per_connection, 256ull << 30);
  EXPECT_EQ(defaults->handshake_timeout_ms, 10000u);
  EXPECT_EQ(defaults->max_unread_replies_per_connection, 4096u);
}

TEST(Config, HardeningErrorsNameTheField) {
  const BadCase cases[] = {
      {R"({"socket_owner": 0})", "socket_owner"},
      {R"({"socket_group": ["a"]})", "socket_group"},
      {R"({"admin_group": null})", "admin_group"},
      {R"({"max_connections_per_uid": 0})", "max_connections_per_uid"},
      {R"({"max_connections_per_uid": -5})", "max_connections_per_uid"},
      {R"({"max_buffer_bytes_per_connection": 1e30})", "max_buffer_bytes_per_connection"},
      {R"({"max_buffer_bytes_per_connection": 9223372036854775807})",
       "max_buffer_bytes_per_connection"},
      {R"({"handshake_timeout_ms": 0})", "handshake_timeout_ms"},
      {R"({"handshake_timeout_ms": 3600001})", "handshake_timeout_ms"},
      {R"({"max_unread_replies_per_connection": 0})", "max_unread_replies_per_connection"},
      // A number beyond a double threw out of the parser (found by fuzz_config).
      {R"({"max_connections": 1e999})", "not valid JSON"},
      {R"(1e66666666666633)", "not valid JSON"},
  };
  for (const auto& c : cases) {
    auto parsed = ParseConfig(c.json);
    ASSERT_FALSE(parsed.ok()) << c.json;
    EXPECT_EQ(parsed.status().code(), Code::kInvalidArgument);
    EXPECT_NE(parsed.status().message().find(c.must_mention), std::string::npos)
        << c.json << " -> " << parsed.status().message();
  }
}

TEST(Config, IoSpinDefaultsByCoresAndIsBounded) {
  auto defaults = ParseConfig("{}");
  ASSERT_TRUE(defaults.ok());
  const long cores = ::sysconf(_SC_NPROCESSORS_ONLN);
  EXPECT_EQ(defaults->io_spin_us, cores > 2 ? ipc::kDefaultSpinUs : 0u);
  auto set = ParseConfig(R"({"io_spin_us": 0})");
  ASSERT_TRUE(set.ok()) << set.status().ToString();
  EXPECT_EQ(set->io_spin_us, 0u);
  set = ParseConfig(R"({"io_spin_us": 250})");
  ASSERT_TRUE(set.ok()) << set.status().ToString();
  EXPECT_EQ(set->io_spin_us, 250u);
  auto again = ParseConfig(ConfigToJson(*set));
  ASSERT_TRUE(again.ok()) << again.status().ToString();
  EXPECT_EQ(again->io_spin_us, 250u);
  for (const char* bad :
       {R"({"io_spin_us": 10001})", R"({"io_spin_us": -1})", R"({"io_spin_us": "100"})"}) {
    auto parsed = ParseConfig(bad);
    ASSERT_FALSE(parsed.ok()) << bad;
    EXPECT_NE(parsed.status().message().find("io_spin_us"), std::string::npos)
        << parsed.status().message();
  }
}

TEST(Config, SharedRingsAreOnByDefaultAndABoolean) {
  auto defaults = ParseConfig("{}");
  ASSERT_TRUE(defaults.ok());
  EXPECT_TRUE(defaults->shared_rings);
  auto off = ParseConfig(R"({"shared_rings": false})");
  ASSERT_TRUE(off.ok()) << off.status().ToString();
  EXPECT_FALSE(off->shared_rings);
  auto again = ParseConfig(ConfigToJson(*off));
  ASSERT_TRUE(again.ok());
  EXPECT_FALSE(again->shared_rings);
  auto wrong = ParseConfig(R"({"shared_rings": "no"})");
  ASSERT_FALSE(wrong.ok());
  EXPECT_NE(wrong.status().message().find("shared_rings"), std::string::npos);
}

TEST(Config, LooksUpUsersAndGroupsByNameOrNumber) {
  auto root = LookupUser("socket_owner", "root");
  ASSERT_TRUE(root.ok()) << root.status().ToString();
  EXPECT_EQ(*root, 0u);
  auto numeric = LookupUser("socket_owner", "4242");  // need not exist
  ASSERT_TRUE(numeric.ok());
  EXPECT_EQ(*numeric, 4242u);
  auto group = LookupGroup("socket_group", "root");
  ASSERT_TRUE(group.ok());
  EXPECT_EQ(*group, 0u);
  auto missing = LookupGroup("admin_group", "no-such-group-anywhere");
  ASSERT_FALSE(missing.ok());
  EXPECT_EQ(missing.status().code(), Code::kNotFound);
  EXPECT_NE(missing.status().message().find("admin_group"), std::string::npos);
  EXPECT_NE(missing.status().message().find("no-such-group-anywhere"), std::string::npos);
  // (uid_t)-1 means "leave unchanged" to chown, so it is not a user.
  EXPECT_FALSE(LookupUser("socket_owner", "4294967295").ok());
}

}  // namespace
}  // namespace atl::daemon
