// Coral's C++ example (built as C++11, as Coral supports), with its results checked, plus the
// error a Coral program sees when it calls an accelerator that is not installed.
#include <inaccel/coral>

#include <exception>
#include <future>
#include <iostream>
#include <sstream>
#include <string>

int main() {
  int size = 1024;

  inaccel::vector<float> a(size), b(size), c(size);

  for (int i = 0; i < size; i++) {
    a[i] = static_cast<float>(i);
    b[i] = static_cast<float>(3 * i);
  }

  inaccel::request request("vector.addition");

  request.arg(a).arg(b).arg(c).arg(size);

  std::cout << request << std::endl;

  std::ostringstream printed;
  printed << request;
  const std::string prefix = "---\nvector.addition:\n- array:\n";
  if (printed.str().compare(0, prefix.size(), prefix) != 0) {
    std::cerr << "unexpected request text:\n" << printed.str() << std::endl;
    return 1;
  }

  std::future<void> response = inaccel::submit(request);

  try {
    response.get();
  } catch (const std::exception& e) {
    std::cerr << "vector.addition failed: " << e.what() << std::endl;
    return 1;
  }

  for (int i = 0; i < size; i++) {
    if (c[i] != a[i] + b[i]) {
      std::cerr << "c[" << i << "] = " << c[i] << ", expected " << a[i] + b[i] << std::endl;
      return 1;
    }
  }

  inaccel::request missing("com.example.not.installed");
  missing.arg(a).arg(b).arg(c).arg(size);
  try {
    inaccel::submit(missing).get();
    std::cerr << "a request for a missing accelerator succeeded" << std::endl;
    return 1;
  } catch (const inaccel::exception& e) {
    std::cout << "expected failure: " << e.what() << std::endl;
  }
  return 0;
}
