// The `vision` accelerator on the cuda backend: filter2d, a 3x3 or 5x5 convolution of an 8-bit
// plane as in Xilinx's ConvFilter example, one thread per output pixel (the manifest's launch
// block: "global": ["width", "height"], 16 x 16 blocks).
//   dst[y][x] = clamp(round_half_away(sum(coefficients[i][j] * src[y+i-r][x+j-r]) * factor
//                                     + bias), 0, 255)
// where r = size / 2 and pixels outside the image read as 0. The result is bit-identical to the
// cpu backend's: the sum is exact in int32 and sum * factor is exact in double, so whether the
// compiler fuses the multiply and the add into an FMA does not change the rounding.
#include <stdint.h>

namespace {

__device__ __forceinline__ uint8_t Pixel(int32_t sum, double factor, double bias) {
  double twice = 2.0 * (static_cast<double>(sum) * factor + bias);
  twice = twice < 0.0 ? 0.0 : twice;
  twice = twice > 510.0 ? 510.0 : twice;
  return static_cast<uint8_t>((static_cast<int32_t>(twice) + 1) >> 1);
}

template <int K>
__device__ void Filter(const int16_t* coefficients_in, float factor, int16_t bias, int width,
                       int height, const uint8_t* src, uint8_t* dst, int x, int y) {
  constexpr int kRadius = K / 2;
  int32_t sum = 0;
#pragma unroll
  for (int i = 0; i < K; ++i) {
    int row = y + i - kRadius;
    if (row < 0 || row >= height) continue;
    const uint8_t* line = src + static_cast<long long>(row) * width;
#pragma unroll
    for (int j = 0; j < K; ++j) {
      int column = x + j - kRadius;
      if (column < 0 || column >= width) continue;
      sum += static_cast<int32_t>(coefficients_in[i * K + j]) * line[column];
    }
  }
  dst[static_cast<long long>(y) * width + x] = Pixel(sum, factor, bias);
}

}  // namespace

extern "C" __global__ void filter2d(const int16_t* coefficients, int size, float factor,
                                    int16_t bias, int width, int height, const uint8_t* src,
                                    uint8_t* dst) {
  // The coefficients, read once per block.
  __shared__ int16_t taps[25];
  int t = threadIdx.y * blockDim.x + threadIdx.x;
  int count = size == 3 ? 9 : 25;
  if ((size == 3 || size == 5) && t < count) taps[t] = coefficients[t];
  __syncthreads();
  int x = blockIdx.x * blockDim.x + threadIdx.x;
  int y = blockIdx.y * blockDim.y + threadIdx.y;
  if (x >= width || y >= height) return;
  if (size == 3) {
    Filter<3>(taps, factor, bias, width, height, src, dst, x, y);
  } else if (size == 5) {
    Filter<5>(taps, factor, bias, width, height, src, dst, x, y);
  }
}
