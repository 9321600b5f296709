// Kernels for Atoll's tests and benchmarks.
#include <atoll/cpu_kernel.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <thread>

ATOLL_CPU_BINARY()

namespace {

int ReadInt(const atoll_cpu_arg& arg) {
  int v = 0;
  std::memcpy(&v, arg.data, sizeof(v));
  return v;
}

}  // namespace

ATOLL_CPU_KERNEL(noop) {
  (void)args;
  (void)arg_count;
  (void)error;
  (void)error_size;
  return 0;
}

ATOLL_CPU_KERNEL(sleep_ms) {
  if (arg_count != 1 || args[0].size_bytes != sizeof(int)) {
    std::snprintf(error, error_size, "sleep_ms takes one int");
    return 3;
  }
  std::this_thread::sleep_for(std::chrono::milliseconds(ReadInt(args[0])));
  return 0;
}

// Occupies its compute unit for `microseconds` without using the CPU: a simulated device's
// kernel, so that scheduling tests and benchmarks on a 2-core host measure the scheduler, not
// the host's cores.
ATOLL_CPU_KERNEL(hold_us) {
  if (arg_count != 1 || args[0].size_bytes != sizeof(int) || ReadInt(args[0]) < 0) {
    std::snprintf(error, error_size, "hold_us takes one non-negative int");
    return 3;
  }
  std::this_thread::sleep_for(std::chrono::microseconds(ReadInt(args[0])));
  return 0;
}

// out[i] = value for i < n, after sleeping `milliseconds`: shows whether outputs were written.
ATOLL_CPU_KERNEL(fill) {
  if (arg_count != 4) {
    std::snprintf(error, error_size, "fill takes 4 arguments");
    return 3;
  }
  int n = ReadInt(args[1]);
  if (n < 0 || static_cast<uint64_t>(n) * sizeof(int) > args[0].size_bytes) {
    std::snprintf(error, error_size, "fill: n out of range");
    return 3;
  }
  std::this_thread::sleep_for(std::chrono::milliseconds(ReadInt(args[3])));
  int value = ReadInt(args[2]);
  int* out = static_cast<int*>(args[0].data);
  for (int i = 0; i < n; ++i) out[i] = value;
  return 0;
}

// Ends the process it runs in (abort: SIGABRT, which the sanitizers leave alone, unlike SIGSEGV)
// after `milliseconds`, as a device fault ends the process that drives it. For tests of "isolate":
// "device" (docs/architecture.md): in a daemon that runs the cpu backend in-process, it ends
// atolld.
ATOLL_CPU_KERNEL(crash) {
  (void)error;
  (void)error_size;
  if (arg_count == 1) std::this_thread::sleep_for(std::chrono::milliseconds(ReadInt(args[0])));
  std::fflush(stderr);
  std::abort();
}

// Fails with the given status code, to test how kernel errors reach the client.
ATOLL_CPU_KERNEL(fail) {
  int code = arg_count == 1 ? ReadInt(args[0]) : 13;
  std::snprintf(error, error_size, "kernel failed on purpose with code %d", code);
  return code == 0 ? 13 : code;
}
