// The `vector` accelerator on the cuda backend: float vector addition and subtraction with the
// signature of InAccel's Coral vector bitstream, one thread per element (the manifest's launch
// block: "global": "size"). Threads past `size` do nothing, since the backend rounds the grid up
// to whole blocks. Any of a, b and c may be the same array: each element is read before it is
// written, by the same thread.

extern "C" __global__ void vadd(const float* a, const float* b, float* c, int size) {
  long long i = static_cast<long long>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i < size) c[i] = a[i] + b[i];
}

extern "C" __global__ void vsub(const float* a, const float* b, float* c, int size) {
  long long i = static_cast<long long>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i < size) c[i] = a[i] - b[i];
}
