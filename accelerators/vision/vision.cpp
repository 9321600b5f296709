// The `vision` accelerator on the cpu backend: filter2d, a 3x3 or 5x5 convolution of an 8-bit
// plane as in Xilinx's ConvFilter example.
//   dst[y][x] = clamp(round_half_away(sum(coefficients[i][j] * src[y+i-r][x+j-r]) * factor
//                                     + bias), 0, 255)
// where r = size / 2 and pixels outside the image read as 0.
#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>

#include "atoll/cpu_kernel.h"
#include "common/kernel_args.h"

ATOLL_CPU_BINARY()

namespace {

// Interior pixels are summed this many at a time into a stack buffer that stays in L1.
constexpr ptrdiff_t kChunk = 256;

// `sum` is exact in int32 (25 * 32768 * 255 < 2^31) and sum * factor is exact in double (at
// most 28 + 24 significant bits), so the result does not depend on how the compiler contracts
// the arithmetic. For v >= 0, trunc(2v) is 2 trunc(v) plus 1 exactly when v's fraction is at
// least one half, so (trunc(2v) + 1) / 2 rounds half away from zero, exactly (doubling is exact)
// and without a branch or a libm call. Doubling before the clamp, and plain selects rather than
// std::min/max, are what let GCC vectorise the row loop.
inline uint8_t Pixel(int32_t sum, double factor, double bias) {
  double twice = 2.0 * (static_cast<double>(sum) * factor + bias);
  twice = twice < 0.0 ? 0.0 : twice;
  twice = twice > 510.0 ? 510.0 : twice;
  return static_cast<uint8_t>((static_cast<int32_t>(twice) + 1) >> 1);
}

// The sum at (x, y) with bounds checks, for pixels whose window leaves the image.
template <int K>
int32_t BorderSum(const int16_t* coefficients, const uint8_t* src, ptrdiff_t width,
                  ptrdiff_t height, ptrdiff_t x, ptrdiff_t y) {
  constexpr int kRadius = K / 2;
  int32_t sum = 0;
  for (int i = 0; i < K; ++i) {
    ptrdiff_t row = y + i - kRadius;
    if (row < 0 || row >= height) continue;
    for (int j = 0; j < K; ++j) {
      ptrdiff_t column = x + j - kRadius;
      if (column < 0 || column >= width) continue;
      sum += int32_t{coefficients[i * K + j]} * src[row * width + column];
    }
  }
  return sum;
}

template <int K>
void Filter(const int16_t* coefficients_in, float factor_in, int16_t bias_in, ptrdiff_t width,
            ptrdiff_t height, const uint8_t* src, uint8_t* dst) {
  constexpr ptrdiff_t kRadius = K / 2;
  int16_t coefficients[K * K];
  std::copy_n(coefficients_in, K * K, coefficients);
  const double factor = factor_in;
  const double bias = bias_in;
  for (ptrdiff_t y = 0; y < height; ++y) {
    uint8_t* out = dst + y * width;
    bool interior_row = y >= kRadius && y + kRadius < height && width >= K;
    if (!interior_row) {
      for (ptrdiff_t x = 0; x < width; ++x) {
        out[x] = Pixel(BorderSum<K>(coefficients, src, width, height, x, y), factor, bias);
      }
      continue;
    }
    for (ptrdiff_t x = 0; x < kRadius; ++x) {
      out[x] = Pixel(BorderSum<K>(coefficients, src, width, height, x, y), factor, bias);
    }
    // Row by row and tap by tap, so the innermost loop is a plain multiply-add the compiler
    // vectorises.
    for (ptrdiff_t x0 = kRadius; x0 < width - kRadius; x0 += kChunk) {
      ptrdiff_t count = std::min(kChunk, width - kRadius - x0);
      int32_t sums[kChunk];
      std::fill_n(sums, count, 0);
      for (int i = 0; i < K; ++i) {
        const uint8_t* row = src + (y + i - kRadius) * width + (x0 - kRadius);
        for (int j = 0; j < K; ++j) {
          const int32_t coefficient = coefficients[i * K + j];
          const uint8_t* taps = row + j;
          for (ptrdiff_t n = 0; n < count; ++n) sums[n] += coefficient * taps[n];
        }
      }
      for (ptrdiff_t n = 0; n < count; ++n) out[x0 + n] = Pixel(sums[n], factor, bias);
    }
    for (ptrdiff_t x = width - kRadius; x < width; ++x) {
      out[x] = Pixel(BorderSum<K>(coefficients, src, width, height, x, y), factor, bias);
    }
  }
}

}  // namespace

ATOLL_CPU_KERNEL(filter2d) {
  atl::accelerators::KernelArgs in("filter2d", args, arg_count, error, error_size);
  int32_t size = 0;
  float factor = 0;
  int16_t bias = 0;
  int32_t width = 0;
  int32_t height = 0;
  const int16_t* coefficients = nullptr;
  const uint8_t* src = nullptr;
  uint8_t* dst = nullptr;
  if (!in.Count(8, "(coefficients, size, factor, bias, width, height, src, dst)") ||
      !in.Scalar(1, "size", &size) || !in.Scalar(2, "factor", &factor) ||
      !in.Scalar(3, "bias", &bias) || !in.Scalar(4, "width", &width) ||
      !in.Scalar(5, "height", &height)) {
    return in.status();
  }
  if (size != 3 && size != 5) {
    in.Fail("argument 1 'size' is %d; filter2d supports 3 (3x3) and 5 (5x5)", size);
    return in.status();
  }
  if (!std::isfinite(factor)) {
    in.Fail("argument 2 'factor' is %g; it must be a finite number", static_cast<double>(factor));
    return in.status();
  }
  if (width < 0 || height < 0) {
    in.Fail("the image is %d x %d pixels; width and height must be 0 or more", width, height);
    return in.status();
  }
  uint64_t pixels = static_cast<uint64_t>(width) * static_cast<uint64_t>(height);
  if (!in.Array(0, "coefficients", static_cast<uint64_t>(size * size), &coefficients) ||
      !in.Array(6, "src", pixels, &src) || !in.Array(7, "dst", pixels, &dst)) {
    return in.status();
  }
  // Writing dst while the window still reads src would filter already-filtered pixels.
  if (atl::accelerators::Overlap(src, pixels, dst, pixels)) {
    in.Fail("arguments 6 'src' and 7 'dst' overlap; filter2d cannot work in place");
    return in.status();
  }
  if (size == 3) {
    Filter<3>(coefficients, factor, bias, width, height, src, dst);
  } else {
    Filter<5>(coefficients, factor, bias, width, height, src, dst);
  }
  return ATOLL_OK;
}
