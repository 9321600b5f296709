// Coral's other ways to set arguments: explicit indices (given last, as Coral takes them), the
// argument counter, ranges of vectors, host data passed by value, a request changed and submitted
// again, and many requests in flight at once.
#include <inaccel/coral>

#include <cstdio>
#include <exception>
#include <future>
#include <vector>

namespace {

int check(const char* what, const float* c, const float* a, const float* b, int size, float sign) {
  for (int i = 0; i < size; ++i) {
    const float expected = a[i] + sign * b[i];
    if (c[i] != expected) {
      std::fprintf(stderr, "%s: c[%d] = %f, expected %f\n", what, i, c[i], expected);
      return 1;
    }
  }
  return 0;
}

void fill(inaccel::vector<float>& v, int seed) {
  for (int i = 0; i < static_cast<int>(v.size()); ++i) {
    v[i] = static_cast<float>((i * seed) % 977);
  }
}

int run() {
  int size = 65536;
  inaccel::vector<float> a(size), b(size), c(size), d(size);
  fill(a, 3);
  fill(b, 5);
  fill(d, 7);

  // Explicit indices, out of order.
  inaccel::request vsub("vector.subtraction");
  vsub.arg(c, 2).arg(size, 3).arg(a, 0).arg(b, 1);
  inaccel::submit(vsub).get();
  if (check("explicit indices", c.data(), a.data(), b.data(), size, -1) != 0) return 1;

  // The same request with argument 1 replaced, submitted again.
  vsub.arg(d, 1);
  inaccel::submit(vsub).get();
  if (check("replaced argument", c.data(), a.data(), d.data(), size, -1) != 0) return 1;

  // The counter ignores explicit indices: after arg(size, 3), arg() starts again at 0.
  inaccel::request vadd("vector.addition");
  vadd.arg(size, 3).arg(a).arg(b).arg(c);
  inaccel::submit(vadd).get();
  if (check("counter after an index", c.data(), a.data(), b.data(), size, 1) != 0) return 1;

  // Ranges of inaccel vectors: the second halves, so arrays start inside their buffers.
  int half = size / 2;
  inaccel::request ranges("vector.addition");
  ranges.arg<float>(a.begin() + half, a.end())
      .arg<float>(b.begin() + half, b.end())
      .arg<float>(c.begin() + half, c.end(), 2)
      .arg(half, 3);
  inaccel::submit(ranges).get();
  if (check("ranges", c.data() + half, a.data() + half, b.data() + half, half, 1) != 0) return 1;

  // Host data by value: a std::vector and a range of one.
  std::vector<float> host(a.begin(), a.end());
  std::vector<float> host_b(b.begin(), b.end());
  inaccel::request by_value("vector.subtraction");
  by_value.arg(host).arg<float>(host_b.begin(), host_b.end()).arg(c).arg(size);
  inaccel::submit(by_value).get();
  if (check("std::vector by value", c.data(), a.data(), b.data(), size, -1) != 0) return 1;

  // arg_scalar over a plain host array larger than a scalar can be: it travels as a copy.
  std::vector<float> plain(b.begin(), b.end());
  inaccel::request scalar_range("vector.addition");
  scalar_range.arg(a).arg_scalar(plain.data(), plain.data() + size).arg(c).arg(size);
  inaccel::submit(scalar_range).get();
  if (check("arg_scalar range", c.data(), a.data(), plain.data(), size, 1) != 0) return 1;

  // Many requests in flight at once, each with its own vectors.
  const int kRequests = 16;
  std::vector<inaccel::vector<float>> xs, ys, zs;
  std::vector<std::future<void>> futures;
  for (int r = 0; r < kRequests; ++r) {
    xs.emplace_back(size);
    ys.emplace_back(size);
    zs.emplace_back(size);
    fill(xs.back(), r + 1);
    fill(ys.back(), r + 2);
  }
  for (int r = 0; r < kRequests; ++r) {
    inaccel::request request(r % 2 == 0 ? "vector.addition" : "vector.subtraction");
    request.arg(xs[r]).arg(ys[r]).arg(zs[r]).arg(size);
    futures.push_back(inaccel::submit(request));
  }
  for (int r = 0; r < kRequests; ++r) {
    futures[r].get();
    if (check("in flight", zs[r].data(), xs[r].data(), ys[r].data(), size,
              r % 2 == 0 ? 1.0f : -1.0f) != 0) {
      return 1;
    }
  }
  return 0;
}

}  // namespace

int main() {
  try {
    return run();
  } catch (const std::exception& e) {
    std::fprintf(stderr, "%s\n", e.what());
    return 1;
  }
}
