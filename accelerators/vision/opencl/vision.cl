// The `vision` accelerator in OpenCL C: filter2d, a convolution of an 8-bit plane as in Xilinx's
// ConvFilter example, one work-item per pixel:
//   dst[y][x] = clamp(round_half_away(sum(coefficients[i][j] * src[y+i-r][x+j-r]) * factor
//                                     + bias), 0, 255)
// where r = size / 2 and pixels outside the image read as 0. The manifest describes 3x3 and 5x5;
// any size computes that same formula.

// `sum` is exact in an int and sum * factor exact in a double (at most 28 + 24 significant bits),
// so with doubles the result is the cpu backend's bit for bit, however the compiler contracts the
// arithmetic. A device without doubles rounds in float and may differ by one on exact halves.
#if defined(cl_khr_fp64) || defined(cl_amd_fp64)
#pragma OPENCL EXTENSION cl_khr_fp64 : enable
typedef double real;
#else
typedef float real;
#endif

// For v >= 0, trunc(2v) is 2 trunc(v) plus 1 exactly when v's fraction is at least one half, so
// (trunc(2v) + 1) / 2 rounds half away from zero; doubling is exact.
uchar Pixel(int sum, real factor, real bias) {
  real twice = (real)2 * ((real)sum * factor + bias);
  twice = twice < (real)0 ? (real)0 : twice;
  twice = twice > (real)510 ? (real)510 : twice;
  return (uchar)(((int)twice + 1) >> 1);
}

__kernel void filter2d(__global const short* coefficients, int size, float factor, short bias,
                       int width, int height, __global const uchar* src, __global uchar* dst) {
  int x = get_global_id(0);
  int y = get_global_id(1);
  if (x >= width || y >= height) return;
  int radius = size / 2;
  int sum = 0;
  for (int i = 0; i < size; ++i) {
    int row = y + i - radius;
    if (row < 0 || row >= height) continue;
    for (int j = 0; j < size; ++j) {
      int column = x + j - radius;
      if (column < 0 || column >= width) continue;
      sum += coefficients[i * size + j] * src[row * width + column];
    }
  }
  dst[y * width + x] = Pixel(sum, (real)factor, (real)bias);
}
