// Hop tracing, for finding where a request's latency goes: ATOLL_HOP("name") records the
// monotonic time at a point on the request path (client, atolld, a device process). It compiles
// to nothing unless the build is configured with -DATOLL_HOP_TRACE=ON. In such a build every
// process writes its points at exit to $ATOLL_HOP_TRACE_DIR (default /tmp) as
// hops-<pid>-<address>.txt, one "nanoseconds thread point" line each, and
// scripts/hop_trace_report.py merges the files of one run into the median time between points.
// CLOCK_MONOTONIC is one clock for every process of a host, so points compare across processes.
#pragma once

#ifdef ATOLL_HOP_TRACE

#include <time.h>
#include <unistd.h>

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

namespace atl::hop_trace {

struct Point {
  uint64_t ns;
  const char* name;  // a string literal
};

// Each thread appends to its own log without locking; logs never grow past their first
// allocation, so a thread still running at exit cannot move one under the dump.
constexpr size_t kPointsPerThread = size_t{1} << 22;

struct Registry {
  std::mutex mu;
  std::vector<std::unique_ptr<std::vector<Point>>> logs;  // GUARDED_BY(mu)
};

// Leaked on purpose: detached threads may mark points during exit.
inline Registry& TheRegistry() {
  static Registry* registry = [] {
    auto* r = new Registry;
    std::atexit([] {
      Registry& reg = TheRegistry();
      std::lock_guard lock(reg.mu);
      const char* dir = std::getenv("ATOLL_HOP_TRACE_DIR");
      std::string path = std::string(dir != nullptr && dir[0] != '\0' ? dir : "/tmp") + "/hops-" +
                         std::to_string(::getpid()) + "-" +
                         std::to_string(reinterpret_cast<uintptr_t>(&reg)) + ".txt";
      FILE* out = std::fopen(path.c_str(), "w");
      if (out == nullptr) return;
      for (size_t t = 0; t < reg.logs.size(); ++t) {
        const std::vector<Point>& log = *reg.logs[t];
        const size_t n = log.size();
        for (size_t i = 0; i < n; ++i) {
          std::fprintf(out, "%llu %d.%zu %s\n", static_cast<unsigned long long>(log[i].ns),
                       static_cast<int>(::getpid()), t, log[i].name);
        }
      }
      std::fclose(out);
    });
    return r;
  }();
  return *registry;
}

inline std::vector<Point>* ThreadLog() {
  thread_local std::vector<Point>* log = [] {
    auto owned = std::make_unique<std::vector<Point>>();
    owned->reserve(kPointsPerThread);
    std::vector<Point>* raw = owned.get();
    Registry& reg = TheRegistry();
    std::lock_guard lock(reg.mu);
    reg.logs.push_back(std::move(owned));
    return raw;
  }();
  return log;
}

inline void Mark(const char* name) {
  std::vector<Point>* log = ThreadLog();
  if (log->size() == log->capacity()) return;
  timespec ts{};
  ::clock_gettime(CLOCK_MONOTONIC, &ts);
  log->push_back(Point{
      static_cast<uint64_t>(ts.tv_sec) * 1000000000ull + static_cast<uint64_t>(ts.tv_nsec), name});
}

}  // namespace atl::hop_trace

#define ATOLL_HOP(name) ::atl::hop_trace::Mark(name)

#else

#define ATOLL_HOP(name) ((void)0)

#endif
