// Compiled, never run, once per C++ standard a Coral program may use: every overload of the C++
// shim must instantiate without a warning. The function below is never called.
#include <inaccel/coral.h>
#include <inaccel/coral.hpp>
#include <inaccel/coral>
#include <inaccel/rpc>
#include <inaccel/shm>

#include <future>
#include <iostream>
#include <utility>
#include <vector>

#if __cplusplus >= 201703L
#include <memory_resource>
#endif

namespace {

struct Pair {
  int first;
  float second;
};

}  // namespace

std::future<void> coral_header_check(inaccel::vector<float>& a, std::vector<float>& host) {
  int size = static_cast<int>(a.size());
  Pair pair = {1, 2.0f};
  inaccel::request request("vector.addition");
  request.arg(a).arg(host).arg(size).arg(pair);
  request.arg(a, 0).arg(host, 1).arg(size, 2).arg(pair, 3);
  request.arg<float>(a.begin(), a.end()).arg<float>(a.begin(), a.end(), 4);
  request.arg<float>(host.begin(), host.end()).arg<float>(host.begin(), host.end(), 5);
  request.arg_array(a.data(), a.data() + a.size()).arg_array(a.data(), a.data() + 1, 6);
  request.arg_scalar(host.data(), host.data() + 1).arg_scalar(&pair, &pair + 1, 7);
#if defined(__cpp_lib_memory_resource)
  std::pmr::vector<float> shared(4, inaccel::pmr::resource());
  request.arg(shared).arg(shared, 8);
#endif
  std::cout << request << std::endl;
  inaccel::request moved(std::move(request));
  try {
    return inaccel::submit(moved);
  } catch (const inaccel::exception& e) {
    std::cerr << e.what() << std::endl;
    throw;
  }
}
