// Programs and kernels of a Device: loading cubin, fatbin and PTX binaries, the PTX JIT cache,
// and looking up kernels with their parameters checked against the manifest.
#include <unistd.h>

#include <cerrno>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <memory>
#include <mutex>
#include <shared_mutex>
#include <sstream>
#include <string>
#include <system_error>
#include <vector>

#include "atoll/status.h"
#include "device.h"

namespace atl::cuda {
namespace {

std::string Hex(uint64_t value) {
  char text[17];
  std::snprintf(text, sizeof(text), "%016llx", static_cast<unsigned long long>(value));
  return text;
}

std::string Join(const std::vector<std::string>& items) {
  std::string text;
  for (size_t i = 0; i < items.size(); ++i) {
    if (i > 0) text += i + 1 == items.size() ? " and " : ", ";
    text += items[i];
  }
  return text;
}

// Reads the whole file; returns 0 or a status with the reason.
int ReadFile(const std::string& path, std::string* bytes, std::string* error) {
  std::error_code ec;
  auto status = std::filesystem::status(path, ec);
  if (ec || !std::filesystem::exists(status)) {
    *error = "binary '" + path +
             "' cannot be opened: " + (ec ? ec.message() : std::string("no such file"));
    return ec == std::errc::permission_denied ? ATOLL_PERMISSION_DENIED : ATOLL_NOT_FOUND;
  }
  if (!std::filesystem::is_regular_file(status)) {
    *error = "binary '" + path + "' is not a regular file";
    return ATOLL_INVALID_ARGUMENT;
  }
  std::ifstream file(path, std::ios::binary);
  if (!file) {
    *error = "binary '" + path + "' cannot be opened: " + std::strerror(errno);
    return errno == EACCES ? ATOLL_PERMISSION_DENIED : ATOLL_NOT_FOUND;
  }
  std::ostringstream content;
  content << file.rdbuf();
  *bytes = content.str();
  return ATOLL_OK;
}

// Appends the JIT options of `options` to a cuModuleLoadDataEx / cuLinkCreate option list.
void AddJitOptions(const JitOptions& options, std::vector<CUjit_option>* keys,
                   std::vector<void*>* values) {
  if (options.optimization_level >= 0) {
    keys->push_back(CU_JIT_OPTIMIZATION_LEVEL);
    values->push_back(reinterpret_cast<void*>(static_cast<uintptr_t>(options.optimization_level)));
  }
  if (options.line_info) {
    keys->push_back(CU_JIT_GENERATE_LINE_INFO);
    values->push_back(reinterpret_cast<void*>(uintptr_t{1}));
  }
  if (options.max_registers != 0) {
    keys->push_back(CU_JIT_MAX_REGISTERS);
    values->push_back(reinterpret_cast<void*>(static_cast<uintptr_t>(options.max_registers)));
  }
}

}  // namespace

bool JitCache::Get(const std::string& key, std::string* cubin) {
  std::lock_guard<std::mutex> lock(mutex_);
  auto found = memory_.find(key);
  if (found != memory_.end()) {
    *cubin = found->second;
    return true;
  }
  if (dir_.empty()) return false;
  std::ifstream file(std::filesystem::path(dir_) / (key + ".cubin"), std::ios::binary);
  if (!file) return false;
  std::ostringstream content;
  content << file.rdbuf();
  if (!file.good() && !file.eof()) return false;
  *cubin = content.str();
  if (cubin->size() < 4 || std::memcmp(cubin->data(),
                                       "\x7f"
                                       "ELF",
                                       4) != 0)
    return false;
  memory_[key] = *cubin;
  return true;
}

void JitCache::Put(const std::string& key, const std::string& cubin) {
  std::lock_guard<std::mutex> lock(mutex_);
  memory_[key] = cubin;
  if (dir_.empty()) return;
  // Written under a temporary name and renamed, so a reader never sees half a file. A cache that
  // cannot be written only costs a rebuild next time.
  std::error_code ec;
  std::filesystem::create_directories(dir_, ec);
  auto final_path = std::filesystem::path(dir_) / (key + ".cubin");
  auto temporary = final_path;
  temporary += ".tmp" + std::to_string(::getpid());
  {
    std::ofstream file(temporary, std::ios::binary | std::ios::trunc);
    file.write(cubin.data(), static_cast<std::streamsize>(cubin.size()));
    if (!file) {
      std::filesystem::remove(temporary, ec);
      return;
    }
  }
  std::filesystem::rename(temporary, final_path, ec);
  if (ec) std::filesystem::remove(temporary, ec);
}

int Device::CompilePtx(const std::string& ptx, const JitOptions& options, std::string* cubin,
                       std::string* error) {
  std::vector<char> log(16384, '\0');
  std::vector<CUjit_option> keys = {CU_JIT_ERROR_LOG_BUFFER, CU_JIT_ERROR_LOG_BUFFER_SIZE_BYTES};
  std::vector<void*> values = {log.data(), reinterpret_cast<void*>(log.size())};
  AddJitOptions(options, &keys, &values);
  CUlinkState link = nullptr;
  CUresult result =
      cu_.cuLinkCreate(static_cast<unsigned>(keys.size()), keys.data(), values.data(), &link);
  if (result != CUDA_SUCCESS) {
    *error = "cuLinkCreate failed with " + cu_.Describe(result);
    return StatusOf(result);
  }
  std::string source = ptx;
  if (source.empty() || source.back() != '\0') source.push_back('\0');
  result = cu_.cuLinkAddData(link, CU_JIT_INPUT_PTX, source.data(), source.size(), "program.ptx", 0,
                             nullptr, nullptr);
  void* image = nullptr;
  size_t image_size = 0;
  if (result == CUDA_SUCCESS) result = cu_.cuLinkComplete(link, &image, &image_size);
  if (result == CUDA_SUCCESS) cubin->assign(static_cast<const char*>(image), image_size);
  cu_.cuLinkDestroy(link);
  if (result != CUDA_SUCCESS) {
    *error = "compiling its PTX for sm_" + std::to_string(cc_major_) + std::to_string(cc_minor_) +
             " failed with " + cu_.Describe(result);
    std::string text(log.data());
    if (!text.empty()) *error += ":\n" + text;
    return StatusOf(result);
  }
  jit_->CountBuild();
  return ATOLL_OK;
}

int Device::LoadModule(Program* program, CUmodule* module, std::string* error) {
  std::vector<char> log(16384, '\0');
  std::vector<CUjit_option> keys = {CU_JIT_ERROR_LOG_BUFFER, CU_JIT_ERROR_LOG_BUFFER_SIZE_BYTES};
  std::vector<void*> values = {log.data(), reinterpret_cast<void*>(log.size())};
  if (program->kind == BinaryKind::kFatbin) AddJitOptions(program->jit, &keys, &values);
  CUresult result =
      cu_.cuModuleLoadDataEx(module, program->image.data(), static_cast<unsigned>(keys.size()),
                             keys.data(), values.data());
  if (result == CUDA_SUCCESS) return ATOLL_OK;
  std::string arch = "sm_" + std::to_string(cc_major_) + std::to_string(cc_minor_);
  *error = "binary '" + program->path + "' (" + BinaryKindName(program->kind) +
           ") cannot be loaded on " + Describe() + ": " + cu_.Describe(result);
  if (result == CUDA_ERROR_NO_BINARY_FOR_GPU || result == CUDA_ERROR_INVALID_IMAGE ||
      result == CUDA_ERROR_UNSUPPORTED_PTX_VERSION) {
    std::vector<std::string> held =
        BinaryArchitectures(ClassifyBinary(program->image), program->image);
    if (!held.empty()) *error += "; it holds code for " + Join(held);
    *error += "; this GPU needs " + arch + " code or PTX of compute_" + std::to_string(cc_major_) +
              std::to_string(cc_minor_) + " or older (nvcc -gencode arch=compute_" +
              std::to_string(cc_major_) + std::to_string(cc_minor_) + ",code=[" + arch +
              ",compute_" + std::to_string(cc_major_) + std::to_string(cc_minor_) + "])";
  }
  std::string text(log.data());
  if (!text.empty()) *error += ":\n" + text;
  return StatusOf(result);
}

int Device::LoadProgram(const std::string& path, const std::string& build_options,
                        Program** program, std::string* error) {
  auto loaded = std::make_unique<Program>();
  loaded->device = this;
  loaded->path = path;
  std::string bytes;
  int status = ReadFile(path, &bytes, error);
  if (status != ATOLL_OK) return status;
  loaded->kind = ClassifyBinary(bytes);
  if (loaded->kind == BinaryKind::kUnknown) {
    *error = "binary '" + path +
             "' is not a CUDA binary: neither a cubin (ELF), a fatbin (magic 0xBA55ED50) nor "
             "PTX text (with .version and .target); build it with nvcc -cubin, -fatbin or -ptx";
    return ATOLL_INVALID_ARGUMENT;
  }
  std::string problem = ParseBuildOptions(build_options, &loaded->jit);
  if (!problem.empty()) {
    *error = "buildOptions of binary '" + path + "': " + problem;
    return ATOLL_INVALID_ARGUMENT;
  }

  std::shared_lock<std::shared_mutex> context;
  if (!Enter(&context, error)) return ATOLL_UNAVAILABLE;
  if (loaded->kind == BinaryKind::kPtx) {
    // Compiled once per source, GPU architecture and options; the cubin is what the module is
    // loaded from, now and after a context rebuild.
    std::string key = Hex(Fnv1a64(bytes)) + "-sm_" + std::to_string(cc_major_) +
                      std::to_string(cc_minor_) + "-" + Hex(Fnv1a64(loaded->jit.Canonical())) +
                      "-" + std::to_string(cu_.version);
    if (!jit_->Get(key, &loaded->image)) {
      status = CompilePtx(bytes, loaded->jit, &loaded->image, error);
      if (status != ATOLL_OK) {
        *error = "binary '" + path + "' (PTX) cannot be loaded on " + Describe() + ": " + *error;
        return status;
      }
      jit_->Put(key, loaded->image);
    }
  } else {
    loaded->image = std::move(bytes);
  }
  status = LoadModule(loaded.get(), &loaded->module, error);
  if (status != ATOLL_OK) return status;
  std::lock_guard<std::mutex> lock(programs_mutex_);
  programs_.insert(loaded.get());
  *program = loaded.release();
  return ATOLL_OK;
}

void Device::ReleaseProgram(Program* program) {
  // Under the context's lock, so that a rebuild does not reload the program meanwhile.
  std::shared_lock<std::shared_mutex> context;
  std::string ignored;
  bool usable = Enter(&context, &ignored);
  {
    std::lock_guard<std::mutex> lock(programs_mutex_);
    if (programs_.erase(program) == 0) return;
  }
  if (usable && program->module != nullptr) cu_.cuModuleUnload(program->module);
  delete program;
}

int Device::FindKernel(Program* program, const std::string& name, const char* const* arg_types,
                       uint32_t arg_count, Kernel** kernel, std::string* error) {
  // The context first: a rebuild takes the kernels' lock after the context's.
  std::shared_lock<std::shared_mutex> context;
  if (!Enter(&context, error)) return ATOLL_UNAVAILABLE;
  std::lock_guard<std::mutex> kernels(program->kernels_mutex);
  auto existing = program->kernels.find(name);
  if (existing != program->kernels.end()) {
    if (existing->second->arg_count != arg_count) {
      *error = "kernel '" + name + "' was looked up before with " +
               std::to_string(existing->second->arg_count) + " arguments, now with " +
               std::to_string(arg_count);
      return ATOLL_INVALID_ARGUMENT;
    }
    *kernel = existing->second.get();
    return ATOLL_OK;
  }
  CUfunction function = nullptr;
  CUresult result = cu_.cuModuleGetFunction(&function, program->module, name.c_str());
  if (result != CUDA_SUCCESS) {
    *error = "binary '" + program->path + "' has no kernel '" + name + "' (" +
             cu_.ErrorName(result) + ")";
    unsigned count = 0;
    if (cu_.cuModuleGetFunctionCount != nullptr && cu_.cuModuleEnumerateFunctions != nullptr &&
        cu_.cuFuncGetName != nullptr &&
        cu_.cuModuleGetFunctionCount(&count, program->module) == CUDA_SUCCESS && count > 0) {
      std::vector<CUfunction> functions(count);
      std::vector<std::string> names;
      if (cu_.cuModuleEnumerateFunctions(functions.data(), count, program->module) ==
          CUDA_SUCCESS) {
        for (CUfunction f : functions) {
          const char* text = nullptr;
          if (cu_.cuFuncGetName(&text, f) == CUDA_SUCCESS && text != nullptr) {
            names.push_back("'" + std::string(text) + "'");
          }
        }
      }
      if (!names.empty()) *error += "; it has " + Join(names);
    }
    *error += "; a kernel is found by its extern \"C\" name (a C++ name is mangled)";
    return result == CUDA_ERROR_NOT_FOUND ? ATOLL_NOT_FOUND : StatusOf(result);
  }
  auto created = std::make_unique<Kernel>();
  created->program = program;
  created->name = name;
  created->function = function;
  created->arg_count = arg_count;
  for (uint32_t i = 0; i < arg_count; ++i) {
    created->arg_sizes.push_back(
        arg_types != nullptr && arg_types[i] != nullptr ? ArgumentTypeSize(arg_types[i]) : 0);
  }
  int max_threads = 0;
  if (cu_.cuFuncGetAttribute(&max_threads, CU_FUNC_ATTRIBUTE_MAX_THREADS_PER_BLOCK, function) ==
      CUDA_SUCCESS) {
    created->max_threads = static_cast<uint32_t>(max_threads);
  }
  // The kernel's own parameter list (CUDA 12.4 and newer drivers): a manifest that disagrees is
  // refused here, naming the argument, rather than corrupting memory at the first launch.
  if (cu_.cuFuncGetParamInfo != nullptr) {
    for (uint32_t i = 0; i <= arg_count; ++i) {
      size_t offset = 0, size = 0;
      result = cu_.cuFuncGetParamInfo(function, i, &offset, &size);
      if (result == CUDA_ERROR_NOT_SUPPORTED) break;
      if (i == arg_count) {
        if (result == CUDA_SUCCESS) {
          *error = "kernel '" + name + "' of binary '" + program->path +
                   "' takes more parameters than the " + std::to_string(arg_count) +
                   " arguments the manifest lists";
          return ATOLL_INVALID_ARGUMENT;
        }
        break;
      }
      if (result != CUDA_SUCCESS) {
        *error = "kernel '" + name + "' of binary '" + program->path + "' takes " +
                 std::to_string(i) + " parameters, but the manifest lists " +
                 std::to_string(arg_count) + " arguments";
        return ATOLL_INVALID_ARGUMENT;
      }
      uint32_t expected = created->arg_sizes[i];
      if (expected != 0 && expected != size) {
        *error = "argument " + std::to_string(i) + " of kernel '" + name + "' is '" + arg_types[i] +
                 "' (" + std::to_string(expected) +
                 " bytes) in the manifest, but the kernel's parameter " + std::to_string(i) +
                 " is " + std::to_string(size) + " bytes";
        return ATOLL_INVALID_ARGUMENT;
      }
    }
  }
  *kernel = created.get();
  program->kernels.emplace(name, std::move(created));
  return ATOLL_OK;
}

void Device::ReloadPrograms() {
  std::lock_guard<std::mutex> lock(programs_mutex_);
  for (Program* program : programs_) {
    program->module = nullptr;
    program->reload_problem.clear();
    std::string problem;
    if (LoadModule(program, &program->module, &problem) != ATOLL_OK) {
      program->module = nullptr;
      program->reload_problem = "reloading after a context rebuild failed: " + problem;
    }
    std::lock_guard<std::mutex> kernels(program->kernels_mutex);
    for (auto& [name, kernel] : program->kernels) {
      kernel->function = nullptr;
      if (program->module == nullptr) continue;
      CUresult result = cu_.cuModuleGetFunction(&kernel->function, program->module, name.c_str());
      if (result != CUDA_SUCCESS) {
        kernel->function = nullptr;
        program->reload_problem =
            "kernel '" + name + "' not found after a context rebuild: " + cu_.Describe(result);
      }
    }
  }
}

}  // namespace atl::cuda
