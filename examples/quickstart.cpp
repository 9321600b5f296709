// Calls the bundled accelerators through atolld and checks them against plain C++ loops.
//   quickstart [ELEMENTS]
#include <atoll/atoll.hpp>

#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <string>

namespace {

double Milliseconds(std::chrono::steady_clock::duration d) {
  return std::chrono::duration<double, std::milli>(d).count();
}

}  // namespace

int main(int argc, char** argv) {
  const int n = argc > 1 ? std::atoi(argv[1]) : 1 << 20;
  if (n <= 0) {
    std::fprintf(stderr, "usage: %s [ELEMENTS > 0]\n", argv[0]);
    return 2;
  }
  try {
    atoll::vector<float> a(n), b(n), c(n);
    for (int i = 0; i < n; ++i) {
      a[i] = static_cast<float>(i) * 0.5f;
      b[i] = static_cast<float>(n - i);
    }

    // The three lines that matter.
    atoll::request add("vector.addition");
    add.arg(a).arg(b).arg(c).arg(n);
    auto begin = std::chrono::steady_clock::now();
    atoll::submit(add).get();
    double first_ms = Milliseconds(std::chrono::steady_clock::now() - begin);

    int wrong = 0;
    for (int i = 0; i < n; ++i) wrong += c[i] != a[i] + b[i];
    std::printf("vector.addition of %d floats: c[0] = %g, c[%d] = %g, %d wrong\n", n, c[0], n - 1,
                c[n - 1], wrong);

    // Warm: the binary is loaded and the buffers are already mapped by the daemon.
    const int runs = 20;
    begin = std::chrono::steady_clock::now();
    for (int r = 0; r < runs; ++r) atoll::submit(add).get();
    double atoll_ms = Milliseconds(std::chrono::steady_clock::now() - begin) / runs;

    std::vector<float> direct(n);
    begin = std::chrono::steady_clock::now();
    for (int r = 0; r < runs; ++r) {
      for (int i = 0; i < n; ++i) direct[i] = a[i] + b[i];
    }
    double direct_ms = Milliseconds(std::chrono::steady_clock::now() - begin) / runs;

    atoll::request sub("vector.subtraction");
    sub.arg(a).arg(b).arg(c).arg(n);
    atoll::submit(sub).get();
    for (int i = 0; i < n; ++i) wrong += c[i] != a[i] - b[i];

    // A 3x3 blur of a 640x480 8-bit plane.
    const int width = 640, height = 480, size = 3;
    atoll::vector<short> coefficients = {1, 2, 1, 2, 4, 2, 1, 2, 1};
    atoll::vector<unsigned char> src(width * height), dst(width * height);
    for (int i = 0; i < width * height; ++i) src[i] = static_cast<unsigned char>(i % 256);
    float factor = 1.0f / 16;
    short bias = 0;
    atoll::request blur("vision.filter2d");
    blur.arg(coefficients).arg(size).arg(factor).arg(bias).arg(width).arg(height).arg(src).arg(dst);
    begin = std::chrono::steady_clock::now();
    atoll::submit(blur).get();
    double blur_ms = Milliseconds(std::chrono::steady_clock::now() - begin);

    std::printf("vector.subtraction: %s\n", wrong == 0 ? "correct" : "WRONG");
    std::printf("vision.filter2d 3x3 on %dx%d: dst[1000] = %d (%.3f ms)\n", width, height,
                dst[1000], blur_ms);
    std::printf(
        "timing: first call %.3f ms (loads the binary), then %.3f ms per call through "
        "atolld vs %.3f ms for the same loop in-process\n",
        first_ms, atoll_ms, direct_ms);
    return wrong == 0 ? 0 : 1;
  } catch (const atoll::error& e) {
    std::fprintf(stderr, "quickstart: %s\n", e.what());
    return 1;
  }
}
