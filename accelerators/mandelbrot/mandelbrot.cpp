// The `fractal` accelerator on the cpu backend: mandelbrot, the iteration counts of the Mandelbrot
// set on a grid of points.
//   c = (x0 + x*step) + (y0 + y*step)i, z_0 = 0, z_n+1 = z_n^2 + c
//   counts[y*width + x] = the first n < max_iterations with |z_n|^2 > 4, else max_iterations
// Every operation is a float operation rounded on its own: CMake compiles this file with
// -ffp-contract=off, so no multiply and add are fused, and the counts are those of the OpenCL and
// CUDA versions bit for bit (an FMA changes the orbit, and near the set's edge, the count).
#include <cmath>
#include <cstdint>

#include "atoll/cpu_kernel.h"
#include "common/kernel_args.h"

ATOLL_CPU_BINARY()

namespace {

int32_t Count(float cx, float cy, int32_t max_iterations) {
  float zx = 0.0f;
  float zy = 0.0f;
  int32_t n = 0;
  while (n < max_iterations) {
    float xx = zx * zx;
    float yy = zy * zy;
    if (xx + yy > 4.0f) break;
    float xy = zx * zy;
    zy = (xy + xy) + cy;
    zx = (xx - yy) + cx;
    ++n;
  }
  return n;
}

}  // namespace

ATOLL_CPU_KERNEL(mandelbrot) {
  atl::accelerators::KernelArgs in("mandelbrot", args, arg_count, error, error_size);
  float x0 = 0;
  float y0 = 0;
  float step = 0;
  int32_t max_iterations = 0;
  int32_t width = 0;
  int32_t height = 0;
  int32_t* counts = nullptr;
  if (!in.Count(7, "(x0, y0, step, max_iterations, width, height, counts)") ||
      !in.Scalar(0, "x0", &x0) || !in.Scalar(1, "y0", &y0) || !in.Scalar(2, "step", &step) ||
      !in.Scalar(3, "max_iterations", &max_iterations) || !in.Scalar(4, "width", &width) ||
      !in.Scalar(5, "height", &height)) {
    return in.status();
  }
  if (!std::isfinite(x0) || !std::isfinite(y0) || !std::isfinite(step)) {
    in.Fail("x0, y0 and step are %g, %g and %g; they must be finite numbers",
            static_cast<double>(x0), static_cast<double>(y0), static_cast<double>(step));
    return in.status();
  }
  if (max_iterations < 0) {
    in.Fail("argument 3 'max_iterations' is %d; it must be 0 or more", max_iterations);
    return in.status();
  }
  if (width < 0 || height < 0) {
    in.Fail("the grid is %d x %d points; width and height must be 0 or more", width, height);
    return in.status();
  }
  uint64_t points = static_cast<uint64_t>(width) * static_cast<uint64_t>(height);
  if (!in.Array(6, "counts", points, &counts)) return in.status();
  for (int32_t y = 0; y < height; ++y) {
    // As the GPU versions compute it: the index converted to float (exact below 2^24), times
    // step, plus the origin, each rounded.
    float cy = y0 + static_cast<float>(y) * step;
    int32_t* row = counts + static_cast<int64_t>(y) * width;
    for (int32_t x = 0; x < width; ++x) {
      row[x] = Count(x0 + static_cast<float>(x) * step, cy, max_iterations);
    }
  }
  return ATOLL_OK;
}
