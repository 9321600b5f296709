#include "program_cache.h"

#include <fcntl.h>
#include <openssl/evp.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <memory>
#include <nlohmann/json.hpp>
#include <system_error>

namespace atl::opencl {
namespace {

// Bumped whenever the entry layout changes, so an old entry is a miss rather than misread.
constexpr std::string_view kFormat = "atoll-opencl-program-cache-1";

std::string WriteAtomically(const std::string& path, const void* data, size_t size) {
  std::string temporary = path + ".tmp." + std::to_string(::getpid());
  int fd = ::open(temporary.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0) return "cannot create " + temporary + ": " + std::strerror(errno);
  const auto* bytes = static_cast<const char*>(data);
  size_t written = 0;
  while (written < size) {
    ssize_t n = ::write(fd, bytes + written, size - written);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) {
      std::string problem = "cannot write " + temporary + ": " + std::strerror(errno);
      ::close(fd);
      ::unlink(temporary.c_str());
      return problem;
    }
    written += static_cast<size_t>(n);
  }
  if (::close(fd) != 0 || std::rename(temporary.c_str(), path.c_str()) != 0) {
    std::string problem = "cannot store " + path + ": " + std::strerror(errno);
    ::unlink(temporary.c_str());
    return problem;
  }
  return "";
}

}  // namespace

std::optional<std::string> ReadWholeFile(const std::string& path, int* error) {
  // stdio rather than istreambuf_iterator, which trips GCC 12's -Wnull-dereference.
  std::unique_ptr<FILE, int (*)(FILE*)> file(std::fopen(path.c_str(), "rbe"), &std::fclose);
  if (file == nullptr) {
    if (error != nullptr) *error = errno;
    return std::nullopt;
  }
  std::string content;
  char chunk[65536];
  size_t n = 0;
  while ((n = std::fread(chunk, 1, sizeof(chunk), file.get())) > 0) content.append(chunk, n);
  if (std::ferror(file.get()) != 0) {
    if (error != nullptr) *error = errno != 0 ? errno : EIO;
    return std::nullopt;
  }
  return content;
}

std::string ProgramCache::Key(const std::vector<std::string_view>& parts) {
  std::unique_ptr<EVP_MD_CTX, decltype(&EVP_MD_CTX_free)> context(EVP_MD_CTX_new(),
                                                                  &EVP_MD_CTX_free);
  unsigned char digest[EVP_MAX_MD_SIZE];
  unsigned int length = 0;
  bool ok = context != nullptr && EVP_DigestInit_ex(context.get(), EVP_sha256(), nullptr) == 1 &&
            EVP_DigestUpdate(context.get(), kFormat.data(), kFormat.size()) == 1;
  for (std::string_view part : parts) {
    uint64_t size = part.size();
    ok = ok && EVP_DigestUpdate(context.get(), &size, sizeof(size)) == 1 &&
         EVP_DigestUpdate(context.get(), part.data(), part.size()) == 1;
  }
  ok = ok && EVP_DigestFinal_ex(context.get(), digest, &length) == 1;
  if (!ok) return "";  // no key: the caller builds without the cache
  static const char kHex[] = "0123456789abcdef";
  std::string hex;
  for (unsigned int i = 0; i < length; ++i) {
    hex += kHex[digest[i] >> 4];
    hex += kHex[digest[i] & 15];
  }
  return hex;
}

std::optional<CachedProgram> ProgramCache::Load(const std::string& key) const {
  if (!enabled() || key.empty()) return std::nullopt;
  std::string base = folder_ + "/" + key;
  std::optional<std::string> binary = ReadWholeFile(base + ".bin");
  std::optional<std::string> kernels = ReadWholeFile(base + ".json");
  if (!binary || !kernels || binary->empty()) return std::nullopt;
  CachedProgram program;
  program.binary.assign(binary->begin(), binary->end());
  try {
    nlohmann::json parsed = nlohmann::json::parse(*kernels);
    for (const auto& [name, args] : parsed.at("kernels").items()) {
      std::vector<ArgInfo>& infos = program.kernels[name];
      for (const auto& arg : args) {
        infos.push_back({arg.at("address").get<cl_kernel_arg_address_qualifier>(),
                         arg.at("type").get<std::string>(), arg.at("name").get<std::string>()});
      }
    }
  } catch (const nlohmann::json::exception&) {
    return std::nullopt;
  }
  return program;
}

std::string ProgramCache::Store(const std::string& key, const CachedProgram& program) const {
  if (!enabled() || key.empty()) return "";
  nlohmann::json kernels = nlohmann::json::object();
  for (const auto& [name, args] : program.kernels) {
    nlohmann::json list = nlohmann::json::array();
    for (const ArgInfo& arg : args) {
      list.push_back({{"address", arg.address}, {"type", arg.type_name}, {"name", arg.name}});
    }
    kernels[name] = list;
  }
  std::string text = nlohmann::json{{"kernels", kernels}}.dump();
  std::string base = folder_ + "/" + key;
  // The description first: an entry counts only once its binary exists.
  std::string problem = WriteAtomically(base + ".json", text.data(), text.size());
  if (problem.empty()) {
    problem = WriteAtomically(base + ".bin", program.binary.data(), program.binary.size());
  }
  return problem;
}

std::string PrepareCacheFolder(const std::string& folder) {
  std::error_code ec;
  std::filesystem::create_directories(folder, ec);
  if (ec) return "cannot create " + folder + ": " + ec.message();
  if (::access(folder.c_str(), W_OK | X_OK) != 0) {
    return "cannot write to " + folder + ": " + std::strerror(errno);
  }
  return "";
}

}  // namespace atl::opencl
