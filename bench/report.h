// The benchmark's output: a table for people and a JSON document for tools. Every result carries
// the baseline it is compared with, measured in the same run, and the ratio between the two.
#pragma once

#include <cstdio>
#include <limits>
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "bench_support.h"

namespace atl::bench {

struct Result {
  std::string section;  // a heading naming the scenario and its baseline
  std::string name;     // a stable key, e.g. "roundtrip.vadd1024.cpp.p50"
  double value = 0;
  std::string unit;
  // The baseline figure in the same unit; NaN marks a row that is itself a baseline.
  double baseline = std::numeric_limits<double>::quiet_NaN();
  std::string baseline_name;
  std::string target;              // e.g. "<= 10 us"; empty when the issue sets none
  std::optional<bool> target_met;  // set with `target`
  nlohmann::json details = nlohmann::json::object();

  // value / baseline, or NaN for baseline rows.
  double ratio() const;
};

// Resource use of one scenario, per request: how many CPU microseconds and context switches the
// client and the daemon spent on each, which locates the cost when the latency is too high.
struct Diagnostic {
  std::string scenario;
  double requests = 0;
  double wall_s = 0;
  Usage delta;  // after minus before
};

// A result row; NaN baseline marks a row that is itself a baseline.
Result Make(const std::string& section, const std::string& name, double value,
            const std::string& unit, double baseline = std::numeric_limits<double>::quiet_NaN(),
            const std::string& baseline_name = "",
            nlohmann::json details = nlohmann::json::object());

// Writes `doc` to `path`, pretty-printed; on failure says so on stderr as `program` and returns
// false.
bool WriteJson(const std::string& path, const nlohmann::json& doc, const char* program);

class Report {
 public:
  void Add(Result result) { results_.push_back(std::move(result)); }
  void Add(Diagnostic diagnostic) { diagnostics_.push_back(std::move(diagnostic)); }

  // The results table, then the diagnostics table.
  void Print(std::FILE* out) const;
  // {"machine", "date", "git", "config", "results", "diagnostics"}.
  nlohmann::json ToJson(const MachineInfo& machine, const std::string& date, const std::string& git,
                        const nlohmann::json& config) const;

 private:
  std::vector<Result> results_;
  std::vector<Diagnostic> diagnostics_;
};

}  // namespace atl::bench
