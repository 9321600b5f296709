#include "daemon/config.h"

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

}  // namespace
}  // namespace atl::daemon
