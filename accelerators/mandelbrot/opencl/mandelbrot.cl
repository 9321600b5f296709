// The `fractal` accelerator in OpenCL C: mandelbrot, one work-item per grid point.
//   c = (x0 + x*step) + (y0 + y*step)i, z_0 = 0, z_n+1 = z_n^2 + c
//   counts[y*width + x] = the first n < max_iterations with |z_n|^2 > 4, else max_iterations
// Contraction off, so no multiply and add are fused into an FMA: each operation rounds on its own,
// as on the cpu and cuda backends, and the counts are theirs bit for bit (on a device whose float
// operations round correctly, as OpenCL requires of + and *).
#pragma OPENCL FP_CONTRACT OFF

__kernel void mandelbrot(float x0, float y0, float step, int max_iterations, int width, int height,
                         __global int* counts) {
  int x = get_global_id(0);
  int y = get_global_id(1);
  if (x >= width || y >= height) return;
  float cx = x0 + (float)x * step;
  float cy = y0 + (float)y * step;
  float zx = 0.0f;
  float zy = 0.0f;
  int n = 0;
  while (n < max_iterations) {
    float xx = zx * zx;
    float yy = zy * zy;
    if (xx + yy > 4.0f) break;
    float xy = zx * zy;
    zy = (xy + xy) + cy;
    zx = (xx - yy) + cx;
    ++n;
  }
  counts[(long)y * width + x] = n;
}
