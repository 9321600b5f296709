// The opencl scenario's two in-process callers of vector.cl's vadd, beside Atoll's round trip
// through the daemon:
//   DirectOpencl   the baseline: the kernel called through OpenCL as a program without Atoll
//                  would call it (buffers, writes, NDRange, read, finish), on the device the
//                  backend numbers 0;
//   PluginOpencl   Atoll's opencl backend plugin driven directly (dlopen, program, kernel, launch,
//                  wait for done), which separates what the backend costs from what the daemon's
//                  hand-offs cost.
// Both throw std::runtime_error naming what failed.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>

namespace atl::bench {

class DirectOpencl {
 public:
  // Builds `source_path` for the first device of the first platform that has one.
  DirectOpencl(const std::string& source_path, const std::string& kernel);
  ~DirectOpencl();
  DirectOpencl(const DirectOpencl&) = delete;
  DirectOpencl& operator=(const DirectOpencl&) = delete;

  // c = a + b for n floats, with `local` work-items per group, blocking until c is written.
  void Vadd(const float* a, const float* b, float* c, int n, size_t local);

  const std::string& device_name() const { return device_name_; }

  // "" when an OpenCL device exists, else why not.
  static std::string Unavailable();

 private:
  struct State;
  std::unique_ptr<State> state_;
  std::string device_name_;
};

class PluginOpencl {
 public:
  // Loads the backend plugin and programs its device 0 with `binary_path`.
  PluginOpencl(const std::string& plugin_path, const std::string& binary_path,
               const std::string& kernel);
  ~PluginOpencl();
  PluginOpencl(const PluginOpencl&) = delete;
  PluginOpencl& operator=(const PluginOpencl&) = delete;

  // c = a + b for n floats on compute unit 0, with the geometry the manifest gives
  // ({"global": "size", "local": local}); waits for done.
  void Vadd(float* a, float* b, float* c, int n, uint32_t local);

 private:
  struct State;
  std::unique_ptr<State> state_;
};

}  // namespace atl::bench
