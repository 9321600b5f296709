#include "repository/repository.h"

#include <archive.h>
#include <archive_entry.h>
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <unistd.h>

#include <atomic>
#include <cstdlib>
#include <fstream>
#include <random>
#include <sstream>
#include <thread>

namespace atl::repository {
namespace {

namespace fs = std::filesystem;
using ::testing::HasSubstr;
using ::testing::Not;

class TempDir {
 public:
  TempDir() {
    std::random_device random;
    path_ = fs::temp_directory_path() / ("atoll_repository_test_" + std::to_string(::getpid()) +
                                         "_" + std::to_string(random()));
    fs::create_directories(path_);
  }
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;
  ~TempDir() {
    std::error_code ignored;
    fs::remove_all(path_, ignored);
  }
  const fs::path& path() const { return path_; }

 private:
  fs::path path_;
};

void WriteFile(const fs::path& path, const std::string& bytes) {
  fs::create_directories(path.parent_path());
  std::ofstream out(path, std::ios::binary);
  out << bytes;
}

std::string ReadFile(const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream text;
  text << in.rdbuf();
  return text.str();
}

std::string ManifestJson(const std::string& id = "vector", const std::string& version = "1",
                         const std::string& platform = "",
                         const std::string& name = R"("name": "vector.so",)") {
  return R"({"bitstreamId": ")" + id + R"(", "version": ")" + version + R"(", )" + name +
         (platform.empty() ? "" : R"("platform": )" + platform + ",") +
         R"( "kernels": [{"kernelId": "addition", "name": ["vadd"], "arguments": [
             {"type": "float*", "name": "a", "access": "r"},
             {"type": "float*", "name": "c", "access": "w"},
             {"type": "int", "name": "n"}]}]})";
}

// A package folder: bitstream.json plus a binary whose bytes make the checksum unique.
fs::path MakePackage(const fs::path& folder, const std::string& manifest,
                     const std::string& binary = "vector.so",
                     const std::string& contents = "binary bytes") {
  WriteFile(folder / "bitstream.json", manifest);
  if (!binary.empty()) WriteFile(folder / binary, contents);
  return folder;
}

struct TarItem {
  std::string name;
  unsigned type = AE_IFREG;
  std::string contents;
  std::string link;
};

// Writes a tarball entry by entry, so that a test can build what `tar` would refuse to.
void WriteTarball(const fs::path& path, const std::vector<TarItem>& items) {
  struct archive* out = archive_write_new();
  archive_write_set_format_pax_restricted(out);
  ASSERT_EQ(archive_write_open_filename(out, path.c_str()), ARCHIVE_OK);
  for (const TarItem& item : items) {
    struct archive_entry* entry = archive_entry_new();
    archive_entry_set_pathname(entry, item.name.c_str());
    archive_entry_set_filetype(entry, item.type);
    archive_entry_set_perm(entry, 0644);
    if (item.type == AE_IFLNK) archive_entry_set_symlink(entry, item.link.c_str());
    if (item.type == AE_IFREG)
      archive_entry_set_size(entry, static_cast<la_int64_t>(item.contents.size()));
    ASSERT_EQ(archive_write_header(out, entry), ARCHIVE_OK) << archive_error_string(out);
    if (item.type == AE_IFREG && !item.contents.empty()) {
      archive_write_data(out, item.contents.data(), item.contents.size());
    }
    archive_entry_free(entry);
  }
  archive_write_close(out);
  archive_write_free(out);
}

class RepositoryTest : public ::testing::Test {
 protected:
  fs::path Root() const { return temp_.path() / "repo"; }
  fs::path Source(const std::string& name) const { return temp_.path() / "src" / name; }

  TempDir temp_;
  Repository repository_{temp_.path() / "repo"};
};

TEST_F(RepositoryTest, InstallsAFolder) {
  EXPECT_EQ(repository_.Generation(), 0u);
  fs::path folder = MakePackage(Source("vector"), ManifestJson());
  StatusOr<Entry> entry = repository_.Install(folder);
  ASSERT_TRUE(entry.ok()) << entry.status().ToString();
  EXPECT_EQ(entry->checksum.size(), 64u);
  EXPECT_EQ(entry->manifest.bitstream_id, "vector");
  EXPECT_EQ(entry->binary_path, Root() / entry->checksum / "vector.so");
  EXPECT_TRUE(entry->binary_path.is_absolute());
  EXPECT_EQ(ReadFile(entry->binary_path), "binary bytes");
  EXPECT_EQ(ReadFile(entry->manifest_path), ManifestJson());
  EXPECT_EQ(repository_.Generation(), 1u);
  EXPECT_TRUE(fs::is_empty(Root() / ".staging"));

  StatusOr<std::vector<Entry>> list = repository_.List();
  ASSERT_TRUE(list.ok()) << list.status().ToString();
  ASSERT_EQ(list->size(), 1u);
  EXPECT_EQ((*list)[0].checksum, entry->checksum);
  EXPECT_EQ((*list)[0].binary_path, entry->binary_path);
}

TEST_F(RepositoryTest, ChecksumCoversManifestAndBinary) {
  StatusOr<Entry> first = repository_.Install(MakePackage(Source("a"), ManifestJson()));
  StatusOr<Entry> second = repository_.Install(
      MakePackage(Source("b"), ManifestJson(), "vector.so", "other binary bytes"));
  ASSERT_TRUE(first.ok() && second.ok());
  EXPECT_NE(first->checksum, second->checksum);
}

TEST_F(RepositoryTest, ManifestWithoutNameUsesTheOnlyOtherFile) {
  fs::path folder =
      MakePackage(Source("vector"), ManifestJson("vector", "1", "", ""), "vadd.xclbin");
  StatusOr<Entry> entry = repository_.Install(folder);
  ASSERT_TRUE(entry.ok()) << entry.status().ToString();
  EXPECT_EQ(entry->manifest.binary, "vadd.xclbin");
  StatusOr<std::vector<Entry>> list = repository_.List();
  ASSERT_TRUE(list.ok());
  ASSERT_EQ(list->size(), 1u);
  EXPECT_EQ((*list)[0].binary_path.filename(), "vadd.xclbin");

  WriteFile(Source("two") / "a.bin", "a");
  MakePackage(Source("two"), ManifestJson("vector", "2", "", ""), "b.bin");
  StatusOr<Entry> ambiguous = repository_.Install(Source("two"));
  EXPECT_EQ(ambiguous.status().code(), Code::kInvalidArgument);
  EXPECT_THAT(ambiguous.status().message(),
              HasSubstr("several files could be the binary (a.bin, b.bin)"));

  MakePackage(Source("none"), ManifestJson("vector", "3", "", ""), "");
  EXPECT_EQ(repository_.Install(Source("none")).status().code(), Code::kNotFound);
}

TEST_F(RepositoryTest, InstallsTarballs) {
  MakePackage(Source("pkg"), ManifestJson("vector", "1"));
  fs::path flat = temp_.path() / "flat.tar.gz";
  fs::path nested = temp_.path() / "nested.tgz";
  fs::path plain = temp_.path() / "plain.tar";
  std::string src = Source("pkg").string();
  ASSERT_EQ(std::system(("tar -C '" + src + "' -czf '" + flat.string() + "' .").c_str()), 0);
  ASSERT_EQ(
      std::system(
          ("tar -C '" + Source("").string() + "' -czf '" + nested.string() + "' pkg").c_str()),
      0);
  StatusOr<Entry> from_flat = repository_.Install(flat);
  ASSERT_TRUE(from_flat.ok()) << from_flat.status().ToString();
  EXPECT_EQ(ReadFile(from_flat->binary_path), "binary bytes");

  // The same package in another tarball is the same binary.
  StatusOr<Entry> again = repository_.Install(nested);
  EXPECT_EQ(again.status().code(), Code::kAlreadyExists) << again.status().ToString();

  MakePackage(Source("pkg2"), ManifestJson("vector", "2"));
  ASSERT_EQ(std::system(
                ("tar -C '" + Source("").string() + "' -cf '" + plain.string() + "' pkg2").c_str()),
            0);
  StatusOr<Entry> from_plain = repository_.Install(plain);
  ASSERT_TRUE(from_plain.ok()) << from_plain.status().ToString();
  EXPECT_EQ(from_plain->manifest.version, "2");
  EXPECT_TRUE(fs::is_empty(Root() / ".staging"));
}

TEST_F(RepositoryTest, TarballWithDotDotIsRefused) {
  fs::path tarball = temp_.path() / "evil.tar";
  WriteTarball(tarball, {{"bitstream.json", AE_IFREG, ManifestJson(), ""},
                         {"vector.so", AE_IFREG, "x", ""},
                         {"../evil", AE_IFREG, "owned", ""}});
  StatusOr<Entry> entry = repository_.Install(tarball);
  EXPECT_EQ(entry.status().code(), Code::kInvalidArgument);
  EXPECT_THAT(entry.status().message(), HasSubstr("entry '../evil' leads outside the tarball"));
  EXPECT_FALSE(fs::exists(Root() / ".staging" / "evil"));
  EXPECT_FALSE(fs::exists(Root() / "evil"));
  EXPECT_TRUE(fs::is_empty(Root() / ".staging"));
  EXPECT_EQ(repository_.Generation(), 0u);
}

TEST_F(RepositoryTest, TarballWithUnsafeEntriesIsRefused) {
  struct Case {
    std::vector<TarItem> items;
    const char* message;
  };
  std::vector<Case> cases = {
      {{{"/etc/evil", AE_IFREG, "x", ""}}, "has an absolute path"},
      {{{"bitstream.json", AE_IFLNK, "", "/etc/passwd"}}, "points to an absolute path"},
      {{{"pkg/vector.so", AE_IFLNK, "", "../../secret"}}, "leads outside the tarball"},
      {{{"dev", AE_IFCHR, "", ""}}, "is a character device"},
      {{{"fifo", AE_IFIFO, "", ""}}, "is a fifo"},
      // A link that stays inside, used as a folder to write through.
      {{{"dir", AE_IFLNK, "", "."}, {"dir/x", AE_IFREG, "x", ""}}, "which is a link or a file"},
      // Each link stays inside on its own, but the chain resolves outside.
      {{{"a", AE_IFLNK, "", "."},
        {"b", AE_IFLNK, "", "a/.."},
        {"bitstream.json", AE_IFREG, ManifestJson(), ""},
        {"vector.so", AE_IFLNK, "", "b/../outside.so"}},
       "is a link that leads outside the tarball"},
  };
  WriteFile(temp_.path() / "repo" / "outside.so", "secret");
  for (size_t i = 0; i < cases.size(); ++i) {
    fs::path tarball = temp_.path() / ("case" + std::to_string(i) + ".tar");
    WriteTarball(tarball, cases[i].items);
    StatusOr<Entry> entry = repository_.Install(tarball);
    EXPECT_FALSE(entry.ok()) << "case " << i;
    EXPECT_THAT(entry.status().message(), HasSubstr(cases[i].message)) << "case " << i;
  }
  EXPECT_EQ(repository_.Generation(), 0u);
}

TEST_F(RepositoryTest, TarballMayUseLinksThatStayInside) {
  fs::path tarball = temp_.path() / "links.tar";
  WriteTarball(tarball, {{"pkg", AE_IFDIR, "", ""},
                         {"pkg/bitstream.json", AE_IFREG, ManifestJson(), ""},
                         {"pkg/real.so", AE_IFREG, "linked bytes", ""},
                         {"pkg/vector.so", AE_IFLNK, "", "real.so"}});
  // Two candidate binaries would be ambiguous, so the manifest names one.
  StatusOr<Entry> entry = repository_.Install(tarball);
  ASSERT_TRUE(entry.ok()) << entry.status().ToString();
  EXPECT_EQ(ReadFile(entry->binary_path), "linked bytes");
  EXPECT_FALSE(fs::is_symlink(entry->binary_path));
}

TEST_F(RepositoryTest, TarballWithoutManifestIsNotFound) {
  fs::path tarball = temp_.path() / "empty.tar";
  WriteTarball(tarball, {{"a/x", AE_IFREG, "x", ""}, {"b/y", AE_IFREG, "y", ""}});
  StatusOr<Entry> entry = repository_.Install(tarball);
  EXPECT_EQ(entry.status().code(), Code::kNotFound);
  EXPECT_THAT(entry.status().message(), HasSubstr("no bitstream.json at the top"));
}

TEST_F(RepositoryTest, TarballErrorsNameTheTarballNotTheStagingFolder) {
  std::string bad = ManifestJson();
  bad.replace(bad.find(R"("type": "int")"), 13, R"("type": "itn")");
  fs::path tarball = temp_.path() / "bad.tar";
  WriteTarball(tarball,
               {{"pkg/bitstream.json", AE_IFREG, bad, ""}, {"pkg/vector.so", AE_IFREG, "x", ""}});
  StatusOr<Entry> entry = repository_.Install(tarball);
  EXPECT_EQ(entry.status().code(), Code::kInvalidArgument);
  EXPECT_EQ(entry.status().message(),
            tarball.string() +
                ": pkg/bitstream.json: kernels[0].arguments[2].type: unknown type 'itn'; did you "
                "mean 'int'?");

  fs::path missing = temp_.path() / "missing.tar";
  WriteTarball(missing, {{"bitstream.json", AE_IFREG, ManifestJson(), ""}});
  entry = repository_.Install(missing);
  EXPECT_EQ(entry.status().code(), Code::kNotFound);
  EXPECT_THAT(entry.status().message(), HasSubstr(missing.string() + ": vector.so: the binary"));
  EXPECT_THAT(entry.status().message(), Not(HasSubstr(".staging")));
}

TEST_F(RepositoryTest, NotATarball) {
  WriteFile(temp_.path() / "notes.txt", "hello");
  StatusOr<Entry> entry = repository_.Install(temp_.path() / "notes.txt");
  EXPECT_EQ(entry.status().code(), Code::kInvalidArgument);
  EXPECT_THAT(entry.status().message(), HasSubstr("is neither a folder nor a tarball"));
}

TEST_F(RepositoryTest, SameChecksumTwiceIsAlreadyExists) {
  fs::path folder = MakePackage(Source("vector"), ManifestJson());
  StatusOr<Entry> first = repository_.Install(folder);
  ASSERT_TRUE(first.ok()) << first.status().ToString();
  StatusOr<Entry> second = repository_.Install(folder);
  EXPECT_EQ(second.status().code(), Code::kAlreadyExists);
  EXPECT_THAT(second.status().message(), HasSubstr(first->checksum));
  EXPECT_THAT(second.status().message(), HasSubstr("vector@1"));
  EXPECT_EQ(repository_.Generation(), 1u);
}

TEST_F(RepositoryTest, MissingSourceAndBinaryAreNotFound) {
  StatusOr<Entry> missing = repository_.Install(Source("nowhere"));
  EXPECT_EQ(missing.status().code(), Code::kNotFound);
  EXPECT_THAT(missing.status().message(), HasSubstr("no such file or folder"));

  MakePackage(Source("vector"), ManifestJson(), "");
  StatusOr<Entry> no_binary = repository_.Install(Source("vector"));
  EXPECT_EQ(no_binary.status().code(), Code::kNotFound);
  EXPECT_THAT(no_binary.status().message(),
              HasSubstr("vector.so: the binary that bitstream.json names"));

  fs::create_directories(Source("empty"));
  EXPECT_EQ(repository_.Install(Source("empty")).status().code(), Code::kNotFound);
}

TEST_F(RepositoryTest, MalformedManifestNamesTheField) {
  std::string bad = ManifestJson();
  bad.replace(bad.find(R"("access": "w")"), 13, R"("access": "x")");
  MakePackage(Source("bad"), bad);
  StatusOr<Entry> entry = repository_.Install(Source("bad"));
  EXPECT_EQ(entry.status().code(), Code::kInvalidArgument);
  EXPECT_THAT(entry.status().message(),
              HasSubstr("bitstream.json: kernels[0].arguments[1].access"));
  EXPECT_EQ(repository_.Generation(), 0u);
}

TEST_F(RepositoryTest, InstallingTheManifestFileInstallsItsFolder) {
  MakePackage(Source("vector"), ManifestJson());
  StatusOr<Entry> entry = repository_.Install(Source("vector") / "bitstream.json");
  ASSERT_TRUE(entry.ok()) << entry.status().ToString();
  EXPECT_EQ(entry->manifest.binary, "vector.so");
}

TEST_F(RepositoryTest, ListSortsAndReportsProblems) {
  for (const char* version : {"1.9", "1.10", "1.2"}) {
    ASSERT_TRUE(repository_
                    .Install(MakePackage(Source(version), ManifestJson("vector", version),
                                         "vector.so", version))
                    .ok());
  }
  StatusOr<Entry> other =
      repository_.Install(MakePackage(Source("aaa"), ManifestJson("aaa", "1"), "vector.so", "aaa"));
  ASSERT_TRUE(other.ok());
  WriteFile(other->manifest_path, "{broken");
  WriteFile(Root() / "stray.txt", "x");

  std::vector<std::string> problems;
  StatusOr<std::vector<Entry>> list = repository_.List(&problems);
  ASSERT_TRUE(list.ok()) << list.status().ToString();
  ASSERT_EQ(list->size(), 3u);
  EXPECT_EQ((*list)[0].manifest.version, "1.10");
  EXPECT_EQ((*list)[1].manifest.version, "1.9");
  EXPECT_EQ((*list)[2].manifest.version, "1.2");
  ASSERT_EQ(problems.size(), 2u);
  std::sort(problems.begin(), problems.end());
  EXPECT_THAT(problems[0] + problems[1], HasSubstr("not valid JSON"));
  EXPECT_THAT(problems[0] + problems[1], HasSubstr("stray.txt: not an installed binary"));

  // A broken entry can still be removed by its checksum.
  StatusOr<std::vector<Entry>> removed = repository_.Remove(other->checksum.substr(0, 12));
  ASSERT_TRUE(removed.ok()) << removed.status().ToString();
  EXPECT_FALSE(fs::exists(Root() / other->checksum));
}

TEST_F(RepositoryTest, ListOfAMissingRootIsEmpty) {
  StatusOr<std::vector<Entry>> list = repository_.List();
  ASSERT_TRUE(list.ok());
  EXPECT_TRUE(list->empty());
}

TEST_F(RepositoryTest, RemoveById) {
  ASSERT_TRUE(repository_.Install(MakePackage(Source("1"), ManifestJson("vector", "1"))).ok());
  ASSERT_TRUE(repository_.Install(MakePackage(Source("2"), ManifestJson("vector", "2"))).ok());
  ASSERT_TRUE(repository_.Install(MakePackage(Source("3"), ManifestJson("matrix", "1"))).ok());
  uint64_t generation = repository_.Generation();
  StatusOr<std::vector<Entry>> removed = repository_.Remove("vector");
  ASSERT_TRUE(removed.ok()) << removed.status().ToString();
  EXPECT_EQ(removed->size(), 2u);
  EXPECT_GT(repository_.Generation(), generation);
  StatusOr<std::vector<Entry>> list = repository_.List();
  ASSERT_EQ(list->size(), 1u);
  EXPECT_EQ((*list)[0].manifest.bitstream_id, "matrix");
  EXPECT_TRUE(fs::is_empty(Root() / ".staging"));
}

TEST_F(RepositoryTest, RemoveByIdAtVersion) {
  ASSERT_TRUE(repository_.Install(MakePackage(Source("1"), ManifestJson("vector", "1"))).ok());
  ASSERT_TRUE(repository_.Install(MakePackage(Source("2"), ManifestJson("vector", "2"))).ok());
  StatusOr<std::vector<Entry>> removed = repository_.Remove("vector@2");
  ASSERT_TRUE(removed.ok()) << removed.status().ToString();
  ASSERT_EQ(removed->size(), 1u);
  EXPECT_EQ((*removed)[0].manifest.version, "2");
  StatusOr<std::vector<Entry>> list = repository_.List();
  ASSERT_EQ(list->size(), 1u);
  EXPECT_EQ((*list)[0].manifest.version, "1");
  StatusOr<std::vector<Entry>> missing = repository_.Remove("vector@7");
  EXPECT_EQ(missing.status().code(), Code::kNotFound);
  EXPECT_THAT(missing.status().message(), HasSubstr("vector has no version '7'"));
}

TEST_F(RepositoryTest, RemoveByChecksumPrefix) {
  StatusOr<Entry> entry = repository_.Install(MakePackage(Source("1"), ManifestJson()));
  ASSERT_TRUE(entry.ok());
  StatusOr<std::vector<Entry>> too_short = repository_.Remove(entry->checksum.substr(0, 7));
  EXPECT_EQ(too_short.status().code(), Code::kInvalidArgument);
  EXPECT_THAT(too_short.status().message(), HasSubstr("at least 8 hex digits"));

  std::string prefix = entry->checksum.substr(0, 8);
  for (char& c : prefix) c = static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
  StatusOr<std::vector<Entry>> removed = repository_.Remove(prefix);
  ASSERT_TRUE(removed.ok()) << removed.status().ToString();
  ASSERT_EQ(removed->size(), 1u);
  EXPECT_EQ((*removed)[0].checksum, entry->checksum);
  EXPECT_FALSE(fs::exists(Root() / entry->checksum));
  EXPECT_EQ(repository_.Remove(entry->checksum).status().code(), Code::kNotFound);
}

TEST_F(RepositoryTest, RemoveUnknownSuggests) {
  ASSERT_TRUE(repository_.Install(MakePackage(Source("1"), ManifestJson())).ok());
  StatusOr<std::vector<Entry>> removed = repository_.Remove("vectr");
  EXPECT_EQ(removed.status().code(), Code::kNotFound);
  EXPECT_THAT(removed.status().message(), HasSubstr("did you mean 'vector'?"));
  EXPECT_EQ(repository_.Remove("").status().code(), Code::kInvalidArgument);
}

TEST_F(RepositoryTest, GenerationChangesOnInstallAndRemove) {
  EXPECT_EQ(repository_.Generation(), 0u);
  ASSERT_TRUE(repository_.Install(MakePackage(Source("1"), ManifestJson())).ok());
  uint64_t after_install = repository_.Generation();
  EXPECT_GT(after_install, 0u);
  ASSERT_TRUE(repository_.Remove("vector").ok());
  EXPECT_GT(repository_.Generation(), after_install);
  // Another Repository object on the same root sees the same counter.
  EXPECT_EQ(Repository(Root()).Generation(), repository_.Generation());
}

TEST_F(RepositoryTest, ConcurrentInstallsAllLand) {
  constexpr int kThreads = 4;
  for (int i = 0; i < kThreads; ++i) {
    MakePackage(Source(std::to_string(i)), ManifestJson("vector", std::to_string(i)));
  }
  std::atomic<int> failures{0};
  std::vector<std::thread> threads;
  for (int i = 0; i < kThreads; ++i) {
    threads.emplace_back([&, i] {
      Repository own(Root());  // as a second process would
      if (!own.Install(Source(std::to_string(i))).ok()) ++failures;
    });
  }
  for (std::thread& thread : threads) thread.join();
  EXPECT_EQ(failures.load(), 0);
  EXPECT_EQ(repository_.List()->size(), static_cast<size_t>(kThreads));
  EXPECT_EQ(repository_.Generation(), static_cast<uint64_t>(kThreads));
}

Entry MakeEntry(const std::string& id, const std::string& version, const std::string& platform,
                const std::string& checksum) {
  StatusOr<Manifest> manifest = ParseManifest(ManifestJson(id, version, platform));
  EXPECT_TRUE(manifest.ok()) << manifest.status().ToString();
  Entry entry;
  entry.manifest = *manifest;
  entry.checksum = checksum;
  return entry;
}

std::vector<Entry> ThreeVersions() {
  return {
      MakeEntry("vector", "1", R"({"vendor": "xilinx", "name": "u250", "version": "xdma"})", "c1"),
      MakeEntry("vector", "3", R"({"backend": "cuda", "name": "sm_90"})", "c3"),
      MakeEntry("vector", "2", R"({"backend": "cpu"})", "c2"),
      MakeEntry("matrix", "1", R"({"backend": "cpu"})", "m1")};
}

TEST(PlatformFits, MatchesGivenFields) {
  Platform cpu{"cpu", "", "", ""};
  EXPECT_TRUE(PlatformFits(cpu, {"cpu", "atoll", "x86_64", "1"}));
  EXPECT_FALSE(PlatformFits(cpu, {"opencl", "atoll", "x86_64", "1"}));
  Platform u250{"opencl", "xilinx", "u250", "xdma_201830.2"};
  EXPECT_TRUE(PlatformFits(u250, {"opencl", "xilinx", "u250", "xdma_201830.2"}));
  EXPECT_FALSE(PlatformFits(u250, {"opencl", "xilinx", "u280", "xdma_201830.2"}));
  EXPECT_FALSE(PlatformFits(u250, {"opencl", "xilinx", "u250", "xdma_201920.3"}));
  EXPECT_FALSE(PlatformFits(u250, {"opencl", "intel", "u250", "xdma_201830.2"}));
}

TEST(Index, ResolvesNewestVersionThatFits) {
  Index index(ThreeVersions());
  DevicePlatform cpu{"cpu", "atoll", "x86_64", "1"};
  DevicePlatform h100{"cuda", "nvidia", "sm_90", "13.0"};
  DevicePlatform u250{"opencl", "xilinx", "u250", "xdma"};

  StatusOr<Index::Provider> provider = index.Resolve("vector.addition", {cpu});
  ASSERT_TRUE(provider.ok()) << provider.status().ToString();
  EXPECT_EQ(provider->entry->checksum, "c2");
  EXPECT_EQ(provider->kernel->kernel_id, "addition");

  provider = index.Resolve("vector.addition", {cpu, h100, u250});
  ASSERT_TRUE(provider.ok());
  EXPECT_EQ(provider->entry->checksum, "c3");

  provider = index.Resolve("vector.addition", {u250});
  ASSERT_TRUE(provider.ok());
  EXPECT_EQ(provider->entry->checksum, "c1");
}

TEST(Index, ResolveAllListsEveryPlatformOfTheNewestVersion) {
  std::vector<Entry> entries = ThreeVersions();
  entries.push_back(MakeEntry("vector", "3", R"({"backend": "cpu"})", "c3cpu"));
  entries.push_back(
      MakeEntry("vector", "3.0", R"({"backend": "opencl", "vendor": "pocl"})", "c3cl"));
  Index index(std::move(entries));
  DevicePlatform cpu{"cpu", "atoll", "x86_64", "1"};
  DevicePlatform h100{"cuda", "nvidia", "sm_90", "13.0"};
  DevicePlatform pocl{"opencl", "pocl", "cpu", "3.1"};

  StatusOr<std::vector<Index::Provider>> all = index.ResolveAll("vector.addition", {cpu, h100});
  ASSERT_TRUE(all.ok()) << all.status().ToString();
  ASSERT_EQ(all->size(), 2u);
  EXPECT_EQ((*all)[0].entry->checksum, "c3");
  EXPECT_EQ((*all)[1].entry->checksum, "c3cpu");
  EXPECT_EQ((*all)[0].entry, index.Resolve("vector.addition", {cpu, h100})->entry);

  // Version 3.0 equals 3; a platform no device has is left out.
  all = index.ResolveAll("vector.addition", {cpu, pocl});
  ASSERT_TRUE(all.ok());
  ASSERT_EQ(all->size(), 2u);
  EXPECT_EQ((*all)[0].entry->checksum, "c3cl");
  EXPECT_EQ((*all)[1].entry->checksum, "c3cpu");

  // Only version 1 fits a u250.
  all = index.ResolveAll("vector.addition", {{"opencl", "xilinx", "u250", "xdma"}});
  ASSERT_TRUE(all.ok());
  ASSERT_EQ(all->size(), 1u);
  EXPECT_EQ((*all)[0].entry->checksum, "c1");

  // Resolve's errors, unchanged.
  EXPECT_EQ(
      index.ResolveAll("vector.addition", {{"opencl", "intel", "pac_a10", "1"}}).status().message(),
      index.Resolve("vector.addition", {{"opencl", "intel", "pac_a10", "1"}}).status().message());
  EXPECT_EQ(index.ResolveAll("vector.additon", {cpu}).status().code(), Code::kNotFound);
}

TEST(Index, NothingFitsListsPlatforms) {
  Index index(ThreeVersions());
  StatusOr<Index::Provider> provider =
      index.Resolve("vector.addition", {{"opencl", "intel", "pac_a10", "1"}});
  EXPECT_EQ(provider.status().code(), Code::kFailedPrecondition);
  const std::string& message = provider.status().message();
  EXPECT_THAT(message, HasSubstr("cuda/*/sm_90/* (version 3)"));
  EXPECT_THAT(message, HasSubstr("cpu/*/*/* (version 2)"));
  EXPECT_THAT(message, HasSubstr("opencl/xilinx/u250/xdma (version 1)"));
  EXPECT_THAT(message, HasSubstr("devices here: opencl/intel/pac_a10/1"));
  EXPECT_THAT(index.Resolve("vector.addition", {}).status().message(),
              HasSubstr("devices here: none"));
}

TEST(Index, UnknownIdSuggestsCloseNames) {
  Index index(ThreeVersions());
  StatusOr<Index::Provider> provider = index.Resolve("vector.additon", {{"cpu", "", "", ""}});
  EXPECT_EQ(provider.status().code(), Code::kNotFound);
  EXPECT_THAT(provider.status().message(),
              HasSubstr("no accelerator 'vector.additon' is installed; did you mean "
                        "'vector.addition'"));
  EXPECT_EQ(index.Suggest("matrix.additio"), std::vector<std::string>{"matrix.addition"});
  EXPECT_EQ(index.Suggest("addition"),
            (std::vector<std::string>{"matrix.addition", "vector.addition"}));
  EXPECT_TRUE(index.Suggest("completely.different").empty());
  EXPECT_THAT(index.Resolve("sort", {}).status().message(),
              HasSubstr("an accelerator id is bitstreamId.kernelId"));
}

TEST(Index, BitstreamIdsMayContainDots) {
  Index index({MakeEntry("com.example.vision", "1", R"({"backend": "cpu"})", "v")});
  StatusOr<Index::Provider> provider =
      index.Resolve("com.example.vision.addition", {{"cpu", "", "", ""}});
  ASSERT_TRUE(provider.ok()) << provider.status().ToString();
  EXPECT_EQ(provider->entry->manifest.bitstream_id, "com.example.vision");
}

TEST(Index, ProvidersStayValidWhenMoved) {
  Index index(ThreeVersions());
  StatusOr<Index::Provider> before = index.Resolve("vector.addition", {{"cpu", "", "", ""}});
  ASSERT_TRUE(before.ok());
  Index moved = std::move(index);
  StatusOr<Index::Provider> after = moved.Resolve("vector.addition", {{"cpu", "", "", ""}});
  ASSERT_TRUE(after.ok());
  EXPECT_EQ(before->entry, after->entry);
  EXPECT_EQ(before->kernel, after->kernel);
  EXPECT_GE(before->entry, moved.entries().data());
  EXPECT_LT(before->entry, moved.entries().data() + moved.entries().size());

  Index assigned;
  assigned = std::move(moved);
  after = assigned.Resolve("vector.addition", {{"cpu", "", "", ""}});
  ASSERT_TRUE(after.ok());
  EXPECT_EQ(before->entry, after->entry);
}

}  // namespace
}  // namespace atl::repository
