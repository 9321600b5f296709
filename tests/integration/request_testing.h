// Helpers shared by the integration tests that submit requests through libatoll.
#pragma once

#include <gtest/gtest.h>

#include <future>
#include <random>
#include <string>
#include <utility>

#include "atoll/atoll.hpp"

namespace atl::testing {

// The error a request's future ends with, or OK.
inline std::pair<atoll_status_code, std::string> Outcome(std::future<void>& f) {
  try {
    f.get();
    return {ATOLL_OK, ""};
  } catch (const atoll::error& e) {
    return {e.code(), e.what()};
  }
}

// Fills `a` and `b` with values from `seed`, runs vector.addition into `c`, and checks every sum.
inline void ExpectAdditionWorks(atoll::vector<float>& a, atoll::vector<float>& b,
                                atoll::vector<float>& c, int seed) {
  std::mt19937 rng(seed);
  std::uniform_real_distribution<float> dist(-10, 10);
  for (size_t i = 0; i < a.size(); ++i) {
    a[i] = dist(rng);
    b[i] = dist(rng);
    c[i] = 0;
  }
  int n = static_cast<int>(a.size());
  atoll::request add("vector.addition");
  add.arg(a).arg(b).arg(c).arg(n);
  atoll::submit(add).get();
  for (size_t i = 0; i < a.size(); ++i) ASSERT_EQ(c[i], a[i] + b[i]) << i;
}

}  // namespace atl::testing
