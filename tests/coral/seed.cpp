// The seed's three lines exactly as a Coral user writes them: add two vectors on an accelerator.
#include <inaccel/coral>

#include <cstdio>
#include <exception>

int main() {
  try {
    int size = 1 << 20;
    inaccel::vector<float> a(size), b(size), c(size);
    for (int i = 0; i < size; ++i) {
      a[i] = static_cast<float>(i);
      b[i] = static_cast<float>(2 * (i % 1000)) + 0.5f;
    }

    inaccel::request vadd("vector.addition");
    vadd.arg(a).arg(b).arg(c).arg(size);
    inaccel::submit(vadd).get();

    for (int i = 0; i < size; ++i) {
      if (c[i] != a[i] + b[i]) {
        std::fprintf(stderr, "c[%d] = %f, expected %f\n", i, c[i], a[i] + b[i]);
        return 1;
      }
    }
  } catch (const std::exception& e) {
    std::fprintf(stderr, "%s\n", e.what());
    return 1;
  }
  return 0;
}
