// Kernels for the cuda backend's own tests and benchmarks: a no-op, a fill, an upload consumer,
// and kernels that fault (an illegal address, a trap) or run for a set time (the watchdog's
// "infinite loop", bounded so that a machine without the watchdog still gets its GPU back).
#include <stdint.h>

extern "C" __global__ void noop() {}

// out[i] = value for i < n.
extern "C" __global__ void fill(int* out, int n, int value) {
  long long i = static_cast<long long>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i < n) out[i] = value;
}

// Reads every element of `data` and adds them into out[0]: a request that is almost only its
// upload, for measuring host-to-device bandwidth. One atomic per block, so the kernel costs
// little beside the copy.
extern "C" __global__ void consume(const int* data, int n, unsigned long long* out) {
  __shared__ unsigned long long warps[32];
  long long i = static_cast<long long>(blockIdx.x) * blockDim.x + threadIdx.x;
  unsigned long long value = i < n ? static_cast<unsigned>(data[i]) : 0;
  for (int offset = 16; offset > 0; offset /= 2) {
    value += __shfl_down_sync(0xffffffffu, value, offset);
  }
  if ((threadIdx.x & 31) == 0) warps[threadIdx.x / 32] = value;
  __syncthreads();
  if (threadIdx.x == 0) {
    unsigned long long sum = 0;
    for (unsigned w = 0; w < (blockDim.x + 31) / 32; ++w) sum += warps[w];
    if (sum != 0) atomicAdd(out, sum);
  }
}

// Writes to an address no allocation holds: CUDA_ERROR_ILLEGAL_ADDRESS.
extern "C" __global__ void illegal_address(int* out, int n) {
  long long i = static_cast<long long>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i < n) {
    volatile int* wild = reinterpret_cast<volatile int*>(uintptr_t{0xdead00000000ull} + 4 * i);
    *wild = 1;
    out[i] = 1;
  }
}

// Stops the kernel: CUDA_ERROR_LAUNCH_FAILED.
extern "C" __global__ void trap(int code) {
  if (code >= 0) __trap();
}

// Runs for `milliseconds` of GPU time (the global nanosecond timer), then returns.
extern "C" __global__ void spin(int milliseconds) {
  uint64_t start = 0;
  asm volatile("mov.u64 %0, %%globaltimer;" : "=l"(start));
  uint64_t end = start + static_cast<uint64_t>(milliseconds) * 1000000ull;
  uint64_t now = start;
  while (now < end) asm volatile("mov.u64 %0, %%globaltimer;" : "=l"(now));
}
