#include "arg_types.h"

#include <cctype>
#include <map>
#include <vector>

namespace atl::opencl {
namespace {

std::vector<std::string> Words(std::string_view text) {
  std::vector<std::string> words;
  std::string word;
  for (char c : text) {
    if (std::isalnum(static_cast<unsigned char>(c)) || c == '_') {
      word += c;
    } else if (!word.empty()) {
      words.push_back(word);
      word.clear();
    }
  }
  if (!word.empty()) words.push_back(word);
  return words;
}

bool Ignored(const std::string& word) {
  static const char* const kQualifiers[] = {
      "const",     "volatile",     "restrict",   "__restrict",   "__restrict__", "__global",
      "global",    "__constant",   "constant",   "__private",    "private",      "__read_only",
      "read_only", "__write_only", "write_only", "__read_write", "read_write"};
  for (const char* q : kQualifiers) {
    if (word == q) return true;
  }
  return false;
}

}  // namespace

ArgType ParseArgType(std::string_view text) {
  ArgType type;
  size_t stars = 0;
  for (char c : text) stars += c == '*' ? 1 : 0;
  type.pointer = stars > 0;
  std::vector<std::string> words;
  for (std::string& word : Words(text)) {
    if (!Ignored(word)) words.push_back(std::move(word));
  }
  // Sign and length words in any order, as C allows ("unsigned long int", "long unsigned").
  bool is_unsigned = false, is_signed = false;
  int longs = 0, shorts = 0;
  bool has_int = false, has_char = false;
  std::vector<std::string> rest;
  for (const std::string& word : words) {
    if (word == "unsigned") {
      is_unsigned = true;
    } else if (word == "signed") {
      is_signed = true;
    } else if (word == "long") {
      ++longs;
    } else if (word == "short") {
      ++shorts;
    } else if (word == "int") {
      has_int = true;
    } else if (word == "char") {
      has_char = true;
    } else {
      rest.push_back(word);
    }
  }
  std::string base;
  if (rest.empty()) {
    if (has_char) {
      base = is_unsigned ? "uchar" : "char";
    } else if (shorts > 0) {
      base = is_unsigned ? "ushort" : "short";
    } else if (longs > 0) {
      base = is_unsigned ? "ulong" : "long";
    } else if (has_int || is_unsigned || is_signed) {
      base = is_unsigned ? "uint" : "int";
    }
  } else if (rest.size() == 1 && !is_unsigned && !is_signed && longs == 0 && shorts == 0 &&
             !has_int && !has_char) {
    static const std::map<std::string, std::string> kAliases = {
        {"int8_t", "char"},  {"uint8_t", "uchar"}, {"int16_t", "short"}, {"uint16_t", "ushort"},
        {"int32_t", "int"},  {"uint32_t", "uint"}, {"int64_t", "long"},  {"uint64_t", "ulong"},
        {"size_t", "ulong"}, {"ssize_t", "long"},  {"_Bool", "bool"}};
    auto alias = kAliases.find(rest[0]);
    base = alias != kAliases.end() ? alias->second : rest[0];
  }
  if (base.empty()) {
    // Not a type this parser knows how to fold ("struct point", "unsigned foo"): compared as
    // written, less qualifiers.
    for (const std::string& word : words) {
      if (!base.empty()) base += ' ';
      base += word;
    }
  }
  type.element = base;
  return type;
}

std::string Spell(const ArgType& type) { return type.element + (type.pointer ? "*" : ""); }

uint64_t ScalarSize(const ArgType& type) {
  static const std::map<std::string, uint64_t> kSizes = {
      {"char", 1}, {"uchar", 1}, {"bool", 1},  {"short", 2}, {"ushort", 2}, {"half", 2},
      {"int", 4},  {"uint", 4},  {"float", 4}, {"long", 8},  {"ulong", 8},  {"double", 8}};
  const std::string& element = type.element;
  auto found = kSizes.find(element);
  if (found != kSizes.end()) return found->second;
  // Vector types: a scalar name and a width of 2, 3 (laid out as 4), 4, 8 or 16.
  size_t digits = element.size();
  while (digits > 0 && std::isdigit(static_cast<unsigned char>(element[digits - 1]))) --digits;
  if (digits == element.size() || digits == 0) return 0;
  auto scalar = kSizes.find(element.substr(0, digits));
  if (scalar == kSizes.end() || scalar->first == "bool") return 0;
  int width = std::stoi(element.substr(digits));
  if (width != 2 && width != 3 && width != 4 && width != 8 && width != 16) return 0;
  return scalar->second * static_cast<uint64_t>(width == 3 ? 4 : width);
}

}  // namespace atl::opencl
