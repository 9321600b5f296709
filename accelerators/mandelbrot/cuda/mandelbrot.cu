// The `fractal` accelerator on the cuda backend: mandelbrot, one thread per grid point (the
// manifest's launch block: "global": ["width", "height"], 16 x 16 blocks).
//   c = (x0 + x*step) + (y0 + y*step)i, z_0 = 0, z_n+1 = z_n^2 + c
//   counts[y*width + x] = the first n < max_iterations with |z_n|^2 > 4, else max_iterations
// The _rn intrinsics are never fused into an FMA by nvcc, so each operation rounds on its own as on
// the cpu backend (compiled with -ffp-contract=off) and the counts are identical bit for bit.

extern "C" __global__ void mandelbrot(float x0, float y0, float step, int max_iterations, int width,
                                      int height, int* counts) {
  int x = blockIdx.x * blockDim.x + threadIdx.x;
  int y = blockIdx.y * blockDim.y + threadIdx.y;
  if (x >= width || y >= height) return;
  float cx = __fadd_rn(x0, __fmul_rn(static_cast<float>(x), step));
  float cy = __fadd_rn(y0, __fmul_rn(static_cast<float>(y), step));
  float zx = 0.0f;
  float zy = 0.0f;
  int n = 0;
  while (n < max_iterations) {
    float xx = __fmul_rn(zx, zx);
    float yy = __fmul_rn(zy, zy);
    if (__fadd_rn(xx, yy) > 4.0f) break;
    float xy = __fmul_rn(zx, zy);
    zy = __fadd_rn(__fadd_rn(xy, xy), cy);
    zx = __fadd_rn(__fsub_rn(xx, yy), cx);
    ++n;
  }
  counts[static_cast<long long>(y) * width + x] = n;
}
