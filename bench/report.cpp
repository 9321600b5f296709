#include "report.h"

#include <cmath>
#include <fstream>

namespace atl::bench {

namespace {

// Enough digits to compare runs, few enough that a column of mixed magnitudes stays readable.
std::string Number(double v) {
  if (std::isnan(v)) return "-";
  char text[32];
  double magnitude = std::fabs(v);
  if (magnitude >= 1000) {
    std::snprintf(text, sizeof(text), "%.0f", v);
  } else if (magnitude >= 10) {
    std::snprintf(text, sizeof(text), "%.1f", v);
  } else if (magnitude >= 0.01 || v == 0) {
    std::snprintf(text, sizeof(text), "%.3f", v);
  } else {
    std::snprintf(text, sizeof(text), "%.2e", v);
  }
  return text;
}

std::string Ratio(double r) { return std::isnan(r) ? "-" : Number(r) + "x"; }

// JSON has no NaN: baseline rows carry null instead.
nlohmann::json OrNull(double v) { return std::isnan(v) ? nlohmann::json() : nlohmann::json(v); }

double PerRequest(int64_t total, double requests) {
  return requests > 0 ? static_cast<double>(total) / requests : 0;
}

void Row(std::FILE* out, const std::string& name, const std::string& value, const std::string& unit,
         const std::string& baseline, const std::string& ratio, const std::string& target) {
  std::fprintf(out, "%-34s %12s %-6s %12s %12s  %s\n", name.c_str(), value.c_str(), unit.c_str(),
               baseline.c_str(), ratio.c_str(), target.c_str());
}

void DiagnosticRow(std::FILE* out, const std::vector<std::string>& cells) {
  std::fprintf(out, "%-28s %10s %10s %10s %10s %10s %10s %8s\n", cells[0].c_str(), cells[1].c_str(),
               cells[2].c_str(), cells[3].c_str(), cells[4].c_str(), cells[5].c_str(),
               cells[6].c_str(), cells[7].c_str());
}

}  // namespace

double Result::ratio() const {
  if (std::isnan(baseline) || baseline == 0) return std::numeric_limits<double>::quiet_NaN();
  return value / baseline;
}

void Report::Print(std::FILE* out) const {
  std::string section;
  for (const Result& r : results_) {
    if (r.section != section) {
      section = r.section;
      std::fprintf(out, "\n%s\n", section.c_str());
      Row(out, "name", "value", "unit", "baseline", "ratio", "target");
    }
    std::string target = r.target;
    if (r.target_met) target += *r.target_met ? "  met" : "  MISSED";
    Row(out, r.name, Number(r.value), r.unit, Number(r.baseline), Ratio(r.ratio()), target);
  }
  if (diagnostics_.empty()) return;
  std::fprintf(out,
               "\nWhere the time goes, per request (CPU from getrusage and "
               "/proc/PID/task/*/schedstat; cores = CPU time / wall time)\n");
  DiagnosticRow(out, {"scenario", "requests", "client_us", "daemon_us", "d_runq_us", "client_cs",
                      "daemon_cs", "cores"});
  for (const Diagnostic& d : diagnostics_) {
    auto daemon = [&](int64_t total, double scale) {
      return d.delta.has_daemon ? Number(PerRequest(total, d.requests) / scale) : "-";
    };
    double cpu_ns = static_cast<double>(d.delta.client_cpu_ns + d.delta.daemon_cpu_ns);
    DiagnosticRow(out, {d.scenario, Number(d.requests),
                        Number(PerRequest(d.delta.client_cpu_ns, d.requests) / 1e3),
                        daemon(d.delta.daemon_cpu_ns, 1e3), daemon(d.delta.daemon_runqueue_ns, 1e3),
                        Number(PerRequest(d.delta.client_switches, d.requests)),
                        daemon(d.delta.daemon_switches, 1),
                        Number(d.wall_s > 0 ? cpu_ns / 1e9 / d.wall_s : 0)});
  }
}

nlohmann::json Report::ToJson(const MachineInfo& machine, const std::string& date,
                              const std::string& git, const nlohmann::json& config) const {
  nlohmann::json doc;
  doc["machine"] = {{"cpu", machine.cpu_model},
                    {"cores", machine.cores},
                    {"kernel", machine.kernel},
                    {"clocksource", machine.clocksource},
                    {"loadavg_at_start", machine.loadavg},
                    {"loadavg_at_end", LoadAverage()}};
  doc["date"] = date;
  doc["git"] = git.empty() ? nlohmann::json() : nlohmann::json(git);
  doc["config"] = config;
  nlohmann::json results = nlohmann::json::array();
  for (const Result& r : results_) {
    nlohmann::json j = {{"section", r.section},
                        {"name", r.name},
                        {"value", r.value},
                        {"unit", r.unit},
                        {"baseline", OrNull(r.baseline)},
                        {"baseline_name", r.baseline_name},
                        {"ratio", OrNull(r.ratio())}};
    if (!r.target.empty()) j["target"] = r.target;
    if (r.target_met) j["target_met"] = *r.target_met;
    if (!r.details.empty()) j["details"] = r.details;
    results.push_back(std::move(j));
  }
  doc["results"] = std::move(results);
  nlohmann::json diagnostics = nlohmann::json::array();
  for (const Diagnostic& d : diagnostics_) {
    nlohmann::json j = {
        {"scenario", d.scenario},
        {"requests", d.requests},
        {"wall_s", d.wall_s},
        {"client_cpu_us_per_request", PerRequest(d.delta.client_cpu_ns, d.requests) / 1e3},
        {"client_context_switches_per_request", PerRequest(d.delta.client_switches, d.requests)}};
    if (d.delta.has_daemon) {
      j["daemon_cpu_us_per_request"] = PerRequest(d.delta.daemon_cpu_ns, d.requests) / 1e3;
      j["daemon_runqueue_wait_us_per_request"] =
          PerRequest(d.delta.daemon_runqueue_ns, d.requests) / 1e3;
      j["daemon_context_switches_per_request"] = PerRequest(d.delta.daemon_switches, d.requests);
    }
    diagnostics.push_back(std::move(j));
  }
  doc["diagnostics"] = std::move(diagnostics);
  return doc;
}

Result Make(const std::string& section, const std::string& name, double value,
            const std::string& unit, double baseline, const std::string& baseline_name,
            nlohmann::json details) {
  Result r;
  r.section = section;
  r.name = name;
  r.value = value;
  r.unit = unit;
  r.baseline = baseline;
  r.baseline_name = baseline_name;
  r.details = std::move(details);
  return r;
}

bool WriteJson(const std::string& path, const nlohmann::json& doc, const char* program) {
  std::ofstream out(path);
  out << doc.dump(2) << "\n";
  if (!out) {
    std::fprintf(stderr, "%s: cannot write '%s'\n", program, path.c_str());
    return false;
  }
  return true;
}

}  // namespace atl::bench
