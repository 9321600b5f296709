// std::pmr containers over inaccel::pmr::resource(), passed the way Coral programs pass them:
// arg_array over their data. Also vectors carved out of one pool, so arguments start at offsets
// inside a shared-memory block, and a vector grown element by element through the resource.
#include <inaccel/coral>

#include <cstdio>
#include <exception>
#include <memory_resource>
#include <vector>

namespace {

// Runs `accelerator` on a, b into c and checks c against `expected` on the CPU.
template <typename Vector, typename Op>
int run_and_check(const char* accelerator, const Vector& a, const Vector& b, Vector& c, int size,
                  Op expected) {
  inaccel::request request(accelerator);
  request.arg_array(a.data(), a.data() + a.size())
      .arg_array(b.data(), b.data() + b.size())
      .arg_array(c.data(), c.data() + c.size())
      .arg(size);
  inaccel::submit(request).get();
  for (int i = 0; i < size; ++i) {
    if (c[i] != expected(a[i], b[i])) {
      std::fprintf(stderr, "%s: c[%d] = %f, expected %f\n", accelerator, i, c[i],
                   expected(a[i], b[i]));
      return 1;
    }
  }
  return 0;
}

float add(float x, float y) { return x + y; }
float subtract(float x, float y) { return x - y; }

}  // namespace

int main() {
  try {
    const int size = 100000;

    std::pmr::vector<float> a(size, inaccel::pmr::resource());
    std::pmr::vector<float> b(size, inaccel::pmr::resource());
    std::pmr::vector<float> c(size, inaccel::pmr::resource());
    for (int i = 0; i < size; ++i) {
      a[i] = static_cast<float>(i % 4096);
      b[i] = static_cast<float>(i % 7) * 0.25f;
    }
    if (run_and_check("vector.addition", a, b, c, size, add) != 0) return 1;

    // Three vectors in one pool: one shared-memory block, arguments at offsets inside it.
    std::pmr::monotonic_buffer_resource pool(4 * size * sizeof(float), inaccel::pmr::resource());
    std::pmr::vector<float> x(size, &pool), y(size, &pool), z(size, &pool);
    for (int i = 0; i < size; ++i) {
      x[i] = static_cast<float>(3 * (i % 1000));
      y[i] = static_cast<float>(i % 1000);
    }
    if (run_and_check("vector.subtraction", x, y, z, size, subtract) != 0) return 1;

    // Grown by push_back: every reallocation goes through the resource.
    std::pmr::vector<float> p(inaccel::pmr::resource()), q(inaccel::pmr::resource());
    std::pmr::vector<float> r(inaccel::pmr::resource());
    for (int i = 0; i < size; ++i) {
      p.push_back(static_cast<float>(i % 100));
      q.push_back(1.0f);
      r.push_back(0.0f);
    }
    if (run_and_check("vector.addition", p, q, r, size, add) != 0) return 1;

    // Beyond Coral: arg() takes a pmr vector in place directly.
    std::pmr::vector<float> s(size, inaccel::pmr::resource());
    inaccel::request direct("vector.subtraction");
    direct.arg(p).arg(q).arg(s).arg(size);
    inaccel::submit(direct).get();
    for (int i = 0; i < size; ++i) {
      if (s[i] != p[i] - q[i]) {
        std::fprintf(stderr, "arg(pmr vector): s[%d] = %f, expected %f\n", i, s[i], p[i] - q[i]);
        return 1;
      }
    }
  } catch (const std::exception& e) {
    std::fprintf(stderr, "%s\n", e.what());
    return 1;
  }
  return 0;
}
