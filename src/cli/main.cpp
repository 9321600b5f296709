// atoll: the command line of Atoll. Manages the repository and asks the daemon about its devices,
// its state and to run accelerators.
#include <grp.h>
#include <sys/stat.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <cstdlib>
#include <filesystem>
#include <iomanip>
#include <iostream>
#include <nlohmann/json.hpp>
#include <sstream>

#include "atoll.pb.h"
#include "cli/run_command.h"
#include "client/connection.h"
#include "repository/repository.h"

namespace {

namespace fs = std::filesystem;
using nlohmann::json;

std::string DefaultRepository() {
  const char* env = std::getenv("ATOLL_REPOSITORY");
  return (env != nullptr && env[0] != '\0') ? env : "/var/lib/atoll/repository";
}

int Fail(const atl::Status& status) {
  std::cerr << "atoll: " << status.message() << "\n";
  if (status.code() == atl::Code::kPermissionDenied) return 4;
  return status.code() == atl::Code::kUnavailable ? 3 : 1;
}

// Installing a binary is running code inside atolld, so only its administrators may change a
// shared repository. The kernel enforces that: atolld gives the repository to its admin_group
// (set-group-id folders, mode 2775). This check runs first only to say so clearly; a check in this
// program alone would guard nothing, since it runs with the caller's own rights.
atl::Status CheckMayChangeRepository(const fs::path& root, const std::string& verb) {
  if (::geteuid() == 0) return atl::OkStatus();
  struct stat st;
  if (::stat(root.c_str(), &st) != 0) return atl::OkStatus();  // a new, private repository
  if ((st.st_mode & S_ISGID) != 0) {
    std::vector<gid_t> groups(static_cast<size_t>(std::max(0, ::getgroups(0, nullptr))));
    int count = ::getgroups(static_cast<int>(groups.size()), groups.data());
    groups.resize(static_cast<size_t>(std::max(0, count)));
    groups.push_back(::getegid());
    if (std::find(groups.begin(), groups.end(), st.st_gid) != groups.end()) {
      return atl::OkStatus();
    }
    const ::group* g = ::getgrgid(st.st_gid);
    std::string name = g != nullptr ? g->gr_name : std::to_string(st.st_gid);
    return atl::PermissionDeniedError(
        verb + " refused: only root and members of the group '" + name +
        "' (atolld's admin_group) may change the repository " + root.string() +
        ". Ask an administrator to add you to that group, or use a repository of your own with "
        "--repository or ATOLL_REPOSITORY");
  }
  if (::access(root.c_str(), W_OK) != 0) {
    return atl::PermissionDeniedError(
        verb + " refused: you may not write the repository " + root.string() +
        ". Ask its administrator, or use a repository of your own with --repository or "
        "ATOLL_REPOSITORY");
  }
  return atl::OkStatus();
}

atl::StatusOr<json> QueryDaemon(int kind) {
  auto text = atl::client::Connection::Default().Query(kind, 10000);
  if (!text.ok()) return text.status();
  try {
    return json::parse(*text);
  } catch (const json::exception& e) {
    return atl::InternalError(std::string("the daemon's answer is not JSON: ") + e.what());
  }
}

std::string Signature(const json& accelerator) {
  std::string s = accelerator.value("id", "") + "(";
  bool first = true;
  for (const auto& a : accelerator.at("arguments")) {
    if (!first) s += ", ";
    first = false;
    s += a.value("type", "") + " " + a.value("name", "");
    if (a.contains("access")) s += " [" + a.value("access", "") + "]";
  }
  return s + ")";
}

json EntriesToJson(const std::vector<atl::repository::Entry>& entries) {
  json out = json::array();
  for (const auto& e : entries) {
    for (const auto& k : e.manifest.kernels)
      out.push_back(atl::repository::AcceleratorToJson(e, k));
  }
  return out;
}

std::string FormatBytes(int64_t bytes) {
  if (bytes < 0) return "-";
  std::ostringstream s;
  s << std::fixed << std::setprecision(1) << static_cast<double>(bytes) / (1 << 30) << " GiB";
  return s.str();
}

// The scheduler's counters of `atoll status`: one line per device, then one per tenant.
void PrintScheduler(const json& s) {
  if (!s.is_object()) return;
  std::cout << "scheduler:   " << s.value("policy", "") << ", tenants by "
            << s.value("tenant_by", "") << "\n";
  std::cout << "  " << std::left << std::setw(10) << "DEVICE" << std::setw(11) << "MODE"
            << std::setw(8) << "CUS" << std::setw(8) << "QUEUED" << std::setw(10) << "STARTED"
            << std::setw(7) << "LOADS" << std::setw(8) << "REPROG"
            << "LOADED\n";
  for (const auto& d : s.value("devices", json::array())) {
    std::string loaded;
    for (const auto& b : d.value("loaded", json::array())) {
      loaded += (loaded.empty() ? "" : ", ") + b.get<std::string>();
    }
    if (!d.value("draining_for", "").empty()) {
      loaded += " (draining for " + d.value("draining_for", "") + ")";
    }
    std::cout << "  " << std::setw(10) << d.value("device", "") << std::setw(11)
              << d.value("mode", "") << std::setw(8)
              << (std::to_string(d.value("busy_compute_units", 0)) + "/" +
                  std::to_string(d.value("compute_units", 0)))
              << std::setw(8) << d.value("queued", 0) << std::setw(10) << d.value("started", 0)
              << std::setw(7) << d.value("programmed", 0) << std::setw(8)
              << d.value("reprogrammed", 0) << (loaded.empty() ? "-" : loaded) << "\n";
  }
  std::cout << "  " << std::setw(24) << "TENANT" << std::setw(8) << "WEIGHT" << std::setw(8)
            << "QUEUED" << std::setw(9) << "RUNNING" << std::setw(10) << "DONE" << std::setw(9)
            << "REFUSED"
            << "DEVICE TIME\n";
  for (const auto& t : s.value("tenants", json::array())) {
    std::ostringstream device_time;
    device_time << std::fixed << std::setprecision(3) << t.value("device_ms", 0.0) / 1000 << " s";
    std::cout << "  " << std::setw(24) << t.value("name", "").substr(0, 23) << std::setw(8)
              << t.value("weight", 0) << std::setw(8) << t.value("queued", 0) << std::setw(9)
              << t.value("running", 0) << std::setw(10) << t.value("done", 0) << std::setw(9)
              << t.value("refused", 0) << device_time.str() << "\n";
  }
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{
      "atoll: install accelerators, inspect the daemon and run accelerators from the "
      "shell.\nThe daemon is found at $ATOLL_SOCKET, else " ATOLL_DEFAULT_SOCKET
      "; the "
      "repository at $ATOLL_REPOSITORY, else /var/lib/atoll/repository.",
      "atoll"};
  app.require_subcommand(1);
  // CLI11 2.1 hands what follows `atoll daemon --` to the top level rather than to `daemon`, so
  // the top level takes extras too; every other subcommand refuses them after parsing.
  app.allow_extras();
  std::string socket;
  std::string repository = DefaultRepository();
  app.add_option("-s,--socket", socket, "daemon socket (overrides $ATOLL_SOCKET)");
  auto* repository_option = app.add_option("-r,--repository", repository,
                                           "repository folder (overrides $ATOLL_REPOSITORY)");

  auto* daemon = app.add_subcommand("daemon", "run atolld (arguments after -- go to it)");
  daemon->allow_extras();

  std::vector<std::string> install_paths;
  auto* install = app.add_subcommand(
      "install", "install binaries: folders with a bitstream.json, or tarballs of such folders");
  install->add_option("path", install_paths, "folder or tarball (.tar, .tar.gz, .tgz)")
      ->required()
      ->check(CLI::ExistingPath);

  bool list_json = false;
  auto* list = app.add_subcommand("list", "list installed accelerators and their signatures");
  list->add_flag("--json", list_json, "print JSON");

  std::string remove_what;
  auto* remove = app.add_subcommand(
      "remove", "remove binaries by bitstream id, id@version, or checksum (prefix of 8+ digits)");
  remove->add_option("what", remove_what, "bitstream id, id@version or checksum")->required();

  bool devices_json = false;
  auto* devices = app.add_subcommand("devices", "list the daemon's devices");
  devices->add_flag("--json", devices_json, "print JSON");

  bool status_json = false;
  auto* status = app.add_subcommand("status", "show the daemon's state and counters");
  status->add_flag("--json", status_json, "print JSON");

  std::string run_accelerator;
  std::vector<std::string> run_args;
  uint64_t run_timeout_ms = 0;
  bool run_quiet = false;
  auto* run = app.add_subcommand(
      "run",
      "call an accelerator: arrays as @FILE (outputs as @FILE or @FILE:BYTES), scalars as values."
      "\nExample: atoll run vector.addition @a.bin @b.bin @c.bin 1024");
  run->add_option("accelerator", run_accelerator, "accelerator id, e.g. vector.addition")
      ->required();
  run->add_option("args", run_args, "arguments in signature order (see `atoll list`)");
  run->add_option("--timeout-ms", run_timeout_ms, "fail if not done within this time");
  run->add_flag("-q,--quiet", run_quiet, "do not print the elapsed time");

  CLI11_PARSE(app, argc, argv);
  if (!*daemon && !app.remaining(true).empty()) {
    return app.exit(CLI::ExtrasError(app.remaining(true)));
  }
  if (!socket.empty()) ::setenv("ATOLL_SOCKET", socket.c_str(), 1);

  if (*daemon) {
    fs::path self = fs::read_symlink("/proc/self/exe").parent_path();
    std::string atolld = (self / "atolld").string();
    std::vector<std::string> extra = daemon->remaining();  // before `--`, then after it
    for (auto& e : app.remaining()) extra.push_back(e);
    std::vector<char*> args{atolld.data()};
    std::string socket_flag = "--socket=" + socket;
    std::string repo_flag = "--repository=" + repository;
    if (!socket.empty()) args.push_back(socket_flag.data());
    // atolld reads $ATOLL_REPOSITORY and its configuration file itself; a flag would override both.
    if (repository_option->count() > 0) args.push_back(repo_flag.data());
    for (auto& e : extra) args.push_back(e.data());
    args.push_back(nullptr);
    ::execv(atolld.c_str(), args.data());
    std::cerr << "atoll: cannot run '" << atolld << "': " << std::strerror(errno) << "\n";
    return 1;
  }

  atl::repository::Repository repo(repository);
  if (*install) {
    if (auto allowed = CheckMayChangeRepository(repository, "install"); !allowed.ok()) {
      return Fail(allowed);
    }
    int rc = 0;
    for (const auto& path : install_paths) {
      auto entry = repo.Install(path);
      if (!entry.ok()) {
        std::cerr << "atoll: " << path << ": " << entry.status().message() << "\n";
        rc = 1;
        continue;
      }
      std::cout << "installed " << entry->manifest.bitstream_id << " " << entry->manifest.version
                << " (" << entry->manifest.platform.backend << ") " << entry->checksum.substr(0, 12)
                << ":";
      for (const auto& k : entry->manifest.kernels) {
        std::cout << " " << entry->manifest.bitstream_id << "." << k.kernel_id;
      }
      std::cout << "\n";
    }
    return rc;
  }
  if (*list) {
    std::vector<std::string> problems;
    auto entries = repo.List(&problems);
    if (!entries.ok()) return Fail(entries.status());
    for (const auto& p : problems) std::cerr << "atoll: warning: " << p << "\n";
    json all = EntriesToJson(*entries);
    if (list_json) {
      std::cout << all.dump(2) << "\n";
      return 0;
    }
    if (all.empty()) {
      std::cout << "no accelerators installed in " << repository
                << " (install one with `atoll install FOLDER`)\n";
      return 0;
    }
    std::cout << std::left << std::setw(28) << "ACCELERATOR" << std::setw(9) << "VERSION"
              << std::setw(9) << "BACKEND" << std::setw(14) << "CHECKSUM"
              << "SIGNATURE\n";
    for (const auto& a : all) {
      std::cout << std::setw(28) << a.value("id", "") << std::setw(9) << a.value("version", "")
                << std::setw(9) << a["platform"].value("backend", "") << std::setw(14)
                << a.value("checksum", "").substr(0, 12) << Signature(a) << "\n";
    }
    return 0;
  }
  if (*remove) {
    if (auto allowed = CheckMayChangeRepository(repository, "remove"); !allowed.ok()) {
      return Fail(allowed);
    }
    auto removed = repo.Remove(remove_what);
    if (!removed.ok()) return Fail(removed.status());
    for (const auto& e : *removed) {
      std::cout << "removed " << e.manifest.bitstream_id << " " << e.manifest.version << " "
                << e.checksum.substr(0, 12) << "\n";
    }
    return 0;
  }
  if (*devices) {
    auto all = QueryDaemon(atl::wire::Query::KIND_DEVICES);
    if (!all.ok()) return Fail(all.status());
    if (devices_json) {
      std::cout << all->dump(2) << "\n";
      return 0;
    }
    std::cout << std::left << std::setw(4) << "#" << std::setw(8) << "BACKEND" << std::setw(34)
              << "NAME" << std::setw(22) << "PLATFORM" << std::setw(11) << "MEMORY" << std::setw(8)
              << "CUS"
              << "LOADED\n";
    for (const auto& d : *all) {
      std::string platform = d["platform"].value("vendor", "") + "/" +
                             d["platform"].value("name", "") + "/" +
                             d["platform"].value("version", "");
      std::string loaded;
      for (const auto& b : d["loaded"]) {
        loaded += (loaded.empty() ? "" : ",") + b.value("bitstream", b.value("checksum", "?"));
      }
      std::cout << std::setw(4) << d.value("index", 0) << std::setw(8) << d.value("backend", "")
                << std::setw(34) << d.value("name", "").substr(0, 33) << std::setw(22) << platform
                << std::setw(11) << FormatBytes(d.value("memory_bytes", int64_t{-1}))
                << std::setw(8)
                << (std::to_string(d.value("busy_compute_units", 0)) + "/" +
                    std::to_string(d.value("compute_units", 0)))
                << (loaded.empty() ? "-" : loaded) << "\n";
    }
    return 0;
  }
  if (*status) {
    auto s = QueryDaemon(atl::wire::Query::KIND_STATUS);
    if (!s.ok()) return Fail(s.status());
    if (status_json) {
      std::cout << s->dump(2) << "\n";
      return 0;
    }
    const json& r = (*s)["requests"];
    std::cout << "atolld " << s->value("version", "") << " (pid " << s->value("pid", 0) << "), up "
              << s->value("uptime_s", 0) << " s\n"
              << "connections: " << s->value("connections", 0) << "\n"
              << "requests:    " << r.value("completed", 0) << " completed, "
              << r.value("failed", 0) << " failed, " << r.value("rejected", 0) << " rejected, "
              << r.value("running", 0) << " running, " << r.value("queued", 0) << " queued\n"
              << "repository:  " << (*s)["repository"].value("root", "") << " (generation "
              << (*s)["repository"].value("generation", 0) << ", "
              << (*s)["repository"].value("binaries", 0) << " binaries)\n"
              << "devices:     " << s->value("devices", 0) << "\n";
    if (s->contains("scheduler")) PrintScheduler((*s)["scheduler"]);
    return 0;
  }
  if (*run) {
    auto all = QueryDaemon(atl::wire::Query::KIND_ACCELERATORS);
    if (!all.ok()) return Fail(all.status());
    const json* signature = nullptr;
    for (const auto& a : *all) {
      if (a.value("id", "") == run_accelerator && a.value("runnable", false)) {
        if (signature == nullptr) signature = &a;  // the daemon lists newest versions first
      }
    }
    if (signature == nullptr) {
      // Let the daemon produce its error with suggestions.
      return Fail(atl::cli::Run(run_accelerator, {}, run_timeout_ms, false));
    }
    auto parsed = atl::cli::ParseRunArguments(*signature, run_args);
    if (!parsed.ok()) return Fail(parsed.status());
    atl::Status result = atl::cli::Run(run_accelerator, *parsed, run_timeout_ms, !run_quiet);
    if (!result.ok()) return Fail(result);
    return 0;
  }
  return 0;
}
