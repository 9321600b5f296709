// Hop tracing, compiled in here whatever the build's ATOLL_HOP_TRACE: the points a process marks
// reach its file at exit, and the report script reads them back as requests.
#include "common/hop_trace.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#ifndef ATOLL_HOP_TRACE
#error "hop_trace_test is built with ATOLL_HOP_TRACE defined"
#endif

namespace atl {
namespace {

namespace fs = std::filesystem;

struct Line {
  unsigned long long ns;
  std::string thread, name;
};

fs::path TempDir() {
  char pattern[] = "/tmp/atoll-hop-test-XXXXXX";
  EXPECT_NE(::mkdtemp(pattern), nullptr);
  return pattern;
}

// Runs `marks` in a child process that traces into `dir`, and returns the child's lines.
template <typename Marks>
std::vector<Line> TraceInChild(const fs::path& dir, Marks marks) {
  pid_t child = ::fork();
  if (child == 0) {
    ::setenv("ATOLL_HOP_TRACE_DIR", dir.c_str(), 1);
    marks();
    std::exit(0);  // runs the dump
  }
  int status = 0;
  EXPECT_EQ(::waitpid(child, &status, 0), child);
  EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0);
  std::vector<Line> lines;
  for (const auto& entry : fs::directory_iterator(dir)) {
    EXPECT_EQ(entry.path().filename().string().rfind("hops-" + std::to_string(child) + "-", 0), 0u)
        << entry.path();
    std::ifstream in(entry.path());
    Line line;
    while (in >> line.ns >> line.thread >> line.name) lines.push_back(line);
  }
  return lines;
}

TEST(HopTrace, EachProcessWritesItsPointsAtExitWithTheirThreads) {
  fs::path dir = TempDir();
  std::vector<Line> lines = TraceInChild(dir, [] {
    ATOLL_HOP("t.first");
    std::thread([] { ATOLL_HOP("t.other"); }).join();
    ATOLL_HOP("t.last");
  });
  ASSERT_EQ(lines.size(), 3u);
  std::sort(lines.begin(), lines.end(), [](const Line& a, const Line& b) { return a.ns < b.ns; });
  EXPECT_EQ(lines[0].name, "t.first");
  EXPECT_EQ(lines[1].name, "t.other");
  EXPECT_EQ(lines[2].name, "t.last");
  EXPECT_EQ(lines[0].thread, lines[2].thread);
  EXPECT_NE(lines[0].thread, lines[1].thread);
  fs::remove_all(dir);
}

TEST(HopTrace, TheReportGroupsRequestsByTheirPath) {
  if (std::system("python3 -c '' 2>/dev/null") != 0) GTEST_SKIP() << "python3 is not installed";
  fs::path dir = TempDir();
  TraceInChild(dir, [] {
    for (int i = 0; i < 4; ++i) {
      ATOLL_HOP("c.submit");
      std::thread([] { ATOLL_HOP("d.pop"); }).join();
      ATOLL_HOP("c.woke");
    }
  });
  fs::path out = dir / "report.txt";
  std::string command = "python3 " ATOLL_SOURCE_DIR "/scripts/hop_trace_report.py " + dir.string() +
                        " > " + out.string() + " 2>&1";
  ASSERT_EQ(std::system(command.c_str()), 0);
  std::stringstream report;
  report << std::ifstream(out).rdbuf();
  EXPECT_THAT(report.str(), ::testing::HasSubstr("4 requests from 1 files"));
  EXPECT_THAT(report.str(), ::testing::ContainsRegex("c.submit -> d.pop +[0-9.]+ us"));
  EXPECT_THAT(report.str(), ::testing::HasSubstr("(another thread)"));
  fs::remove_all(dir);
}

}  // namespace
}  // namespace atl
