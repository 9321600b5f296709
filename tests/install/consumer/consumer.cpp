// Uses both public APIs from an installed Atoll; succeeds without a daemon by checking the error.
#include <atoll/atoll.hpp>
#include <inaccel/coral>

#include <cstdio>

int main() {
  atoll::vector<float> a(16);
  inaccel::vector<float> b(16);
  atoll::request r("vector.addition");
  r.arg(a);
  try {
    atoll::submit(r).get();
  } catch (const atoll::error& e) {
    std::printf("%s\n", e.what());
    return e.code() == ATOLL_UNAVAILABLE ? 0 : 1;
  }
  return 0;
}
