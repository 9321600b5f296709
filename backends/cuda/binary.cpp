#include "binary.h"

#include <cctype>
#include <cstdint>
#include <cstring>
#include <sstream>
#include <string>
#include <string_view>
#include <vector>

namespace atl::cuda {
namespace {

template <typename T>
bool ReadAt(std::string_view bytes, uint64_t offset, T* value) {
  if (offset > bytes.size() || bytes.size() - offset < sizeof(T)) return false;
  std::memcpy(value, bytes.data() + offset, sizeof(T));
  return true;
}

constexpr uint32_t kFatbinMagic = 0xBA55ED50u;

// The architecture in a cubin's ELF header: e_flags holds the SM version, in bits 0-7 for the
// older ELF ABI (version 7) and bits 8-15 for the newer (version 8, CUDA 12.8 on).
uint32_t CubinArchitecture(std::string_view bytes) {
  uint8_t abi_version = 0;
  uint32_t flags = 0;
  if (!ReadAt(bytes, 8, &abi_version) || !ReadAt(bytes, 0x30, &flags)) return 0;
  return abi_version >= 8 ? (flags >> 8) & 0xffu : flags & 0xffu;
}

std::string Trim(std::string text) {
  size_t begin = 0;
  while (begin < text.size() && std::isspace(static_cast<unsigned char>(text[begin]))) ++begin;
  size_t end = text.size();
  while (end > begin && std::isspace(static_cast<unsigned char>(text[end - 1]))) --end;
  return text.substr(begin, end - begin);
}

}  // namespace

const char* BinaryKindName(BinaryKind kind) {
  switch (kind) {
    case BinaryKind::kCubin:
      return "cubin";
    case BinaryKind::kFatbin:
      return "fatbin";
    case BinaryKind::kPtx:
      return "PTX";
    case BinaryKind::kUnknown:
      break;
  }
  return "unknown";
}

BinaryKind ClassifyBinary(std::string_view bytes) {
  if (bytes.size() >= 4 && std::memcmp(bytes.data(),
                                       "\x7f"
                                       "ELF",
                                       4) == 0) {
    return BinaryKind::kCubin;
  }
  uint32_t magic = 0;
  if (ReadAt(bytes, 0, &magic) && magic == kFatbinMagic) return BinaryKind::kFatbin;
  // PTX is text: no NUL before the end (a trailing one is allowed) and a .version directive.
  std::string_view text = bytes;
  while (!text.empty() && text.back() == '\0') text.remove_suffix(1);
  if (text.empty() || text.find('\0') != std::string_view::npos) return BinaryKind::kUnknown;
  if (text.find(".version") != std::string_view::npos &&
      text.find(".target") != std::string_view::npos) {
    return BinaryKind::kPtx;
  }
  return BinaryKind::kUnknown;
}

std::vector<std::string> BinaryArchitectures(BinaryKind kind, std::string_view bytes) {
  std::vector<std::string> found;
  auto add = [&](const std::string& name) {
    for (const auto& seen : found) {
      if (seen == name) return;
    }
    found.push_back(name);
  };
  if (kind == BinaryKind::kCubin) {
    uint32_t arch = CubinArchitecture(bytes);
    if (arch != 0) add("sm_" + std::to_string(arch));
  } else if (kind == BinaryKind::kFatbin) {
    uint16_t header_size = 0;
    uint64_t fat_size = 0;
    if (!ReadAt(bytes, 6, &header_size) || !ReadAt(bytes, 8, &fat_size)) return found;
    uint64_t offset = header_size;
    uint64_t end = fat_size > bytes.size() - header_size ? bytes.size() : header_size + fat_size;
    while (offset < end) {
      uint16_t entry_kind = 0;
      uint32_t entry_header = 0;
      uint64_t payload = 0;
      uint32_t arch = 0;
      if (!ReadAt(bytes, offset, &entry_kind) || !ReadAt(bytes, offset + 4, &entry_header) ||
          !ReadAt(bytes, offset + 8, &payload) || !ReadAt(bytes, offset + 0x1c, &arch) ||
          entry_header == 0) {
        break;
      }
      if (entry_kind == 1) add("compute_" + std::to_string(arch));
      if (entry_kind == 2) add("sm_" + std::to_string(arch));
      if (payload > end - offset - entry_header) break;
      offset += entry_header + payload;
    }
  } else if (kind == BinaryKind::kPtx) {
    std::string_view text = bytes;
    size_t at = text.find(".target");
    if (at != std::string_view::npos) {
      at += 7;
      while (at < text.size() && (text[at] == ' ' || text[at] == '\t')) ++at;
      size_t end = at;
      while (end < text.size() &&
             (std::isalnum(static_cast<unsigned char>(text[end])) || text[end] == '_')) {
        ++end;
      }
      std::string target(text.substr(at, end - at));
      if (target.rfind("sm_", 0) == 0) target = "compute_" + target.substr(3);
      if (!target.empty()) add(target);
    }
  }
  return found;
}

uint64_t Fnv1a64(std::string_view bytes, uint64_t seed) {
  uint64_t hash = seed;
  for (unsigned char c : bytes) {
    hash ^= c;
    hash *= 1099511628211ull;
  }
  return hash;
}

std::string JitOptions::Canonical() const {
  std::string text;
  if (optimization_level >= 0) text += "-O" + std::to_string(optimization_level) + " ";
  if (line_info) text += "-lineinfo ";
  if (max_registers != 0) text += "-maxrregcount=" + std::to_string(max_registers) + " ";
  if (!text.empty()) text.pop_back();
  return text;
}

std::string ParseBuildOptions(const std::string& text, JitOptions* options) {
  std::istringstream words(text);
  std::string word;
  while (words >> word) {
    word = Trim(word);
    if (word.size() == 3 && word[0] == '-' && word[1] == 'O' && word[2] >= '0' && word[2] <= '4') {
      options->optimization_level = word[2] - '0';
      continue;
    }
    if (word == "-lineinfo" || word == "--generate-line-info") {
      options->line_info = true;
      continue;
    }
    for (const char* prefix : {"-maxrregcount=", "--maxrregcount="}) {
      size_t length = std::strlen(prefix);
      if (word.compare(0, length, prefix) == 0) {
        std::string number = word.substr(length);
        if (number.empty() || number.size() > 3 ||
            number.find_first_not_of("0123456789") != std::string::npos) {
          return "'" + word + "' needs a register count from 16 to 255";
        }
        uint32_t count = static_cast<uint32_t>(std::stoul(number));
        if (count < 16 || count > 255)
          return "'" + word + "' needs a register count from 16 to 255";
        options->max_registers = count;
        word.clear();
        break;
      }
    }
    if (word.empty()) continue;
    return "unknown build option '" + word +
           "'; the cuda backend's JIT takes -O0 to -O4, -lineinfo and -maxrregcount=N";
  }
  return "";
}

uint32_t ArgumentTypeSize(std::string_view type) {
  // Normalise: drop "const", collapse whitespace.
  std::string words;
  {
    std::istringstream in{std::string(type)};
    std::string word;
    while (in >> word) {
      // A '*' may be glued to the last word ("float*") or stand alone ("float *").
      bool pointer = false;
      while (!word.empty() && word.back() == '*') {
        pointer = true;
        word.pop_back();
      }
      if (!word.empty() && word != "const") words += (words.empty() ? "" : " ") + word;
      if (pointer) words += "*";
    }
  }
  if (!words.empty() && words.back() == '*') return 8;
  static const struct {
    const char* name;
    uint32_t size;
  } kTypes[] = {
      {"char", 1},
      {"signed char", 1},
      {"unsigned char", 1},
      {"uchar", 1},
      {"int8_t", 1},
      {"uint8_t", 1},
      {"bool", 1},
      {"short", 2},
      {"short int", 2},
      {"signed short", 2},
      {"signed short int", 2},
      {"unsigned short", 2},
      {"unsigned short int", 2},
      {"ushort", 2},
      {"int16_t", 2},
      {"uint16_t", 2},
      {"int", 4},
      {"signed", 4},
      {"signed int", 4},
      {"unsigned", 4},
      {"unsigned int", 4},
      {"uint", 4},
      {"int32_t", 4},
      {"uint32_t", 4},
      {"float", 4},
      {"long", 8},
      {"long int", 8},
      {"signed long", 8},
      {"signed long int", 8},
      {"unsigned long", 8},
      {"unsigned long int", 8},
      {"ulong", 8},
      {"long long", 8},
      {"long long int", 8},
      {"signed long long", 8},
      {"signed long long int", 8},
      {"unsigned long long", 8},
      {"unsigned long long int", 8},
      {"int64_t", 8},
      {"uint64_t", 8},
      {"size_t", 8},
      {"ssize_t", 8},
      {"double", 8},
  };
  for (const auto& known : kTypes) {
    if (words == known.name) return known.size;
  }
  return 0;
}

}  // namespace atl::cuda
