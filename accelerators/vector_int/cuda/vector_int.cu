// The `vector.int` accelerator on the cuda backend: int vector addition and subtraction, one
// thread per element. Results wrap around on overflow, as on the cpu backend: the arithmetic is
// done on unsigned values, where wrapping is defined.

extern "C" __global__ void vadd_int(const int* a, const int* b, int* c, int size) {
  long long i = static_cast<long long>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i < size) c[i] = static_cast<int>(static_cast<unsigned>(a[i]) + static_cast<unsigned>(b[i]));
}

extern "C" __global__ void vsub_int(const int* a, const int* b, int* c, int size) {
  long long i = static_cast<long long>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i < size) c[i] = static_cast<int>(static_cast<unsigned>(a[i]) - static_cast<unsigned>(b[i]));
}
