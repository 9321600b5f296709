// libFuzzer target: the daemon's decoding of client packets (daemon/protocol.h).
//
// The input is a sequence of packets, each a 2-byte little-endian length and that many bytes (a
// short tail is the last packet). They go through DecodeClientPacket with the handshake state the
// server keeps; a decoded Submit goes through DecodeArguments against the bundled accelerators'
// kernels (and kernels with launch blocks) and a fixed set of mapped buffers, and every accepted
// array must lie inside its buffer.
#include <fcntl.h>
#include <sys/mman.h>
#include <unistd.h>

#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <fstream>
#include <map>
#include <sstream>
#include <string>
#include <vector>

#include <google/protobuf/stubs/logging.h>

#include "daemon/protocol.h"
#include "repository/manifest.h"

namespace {

using atl::daemon::DecodedArguments;
using atl::daemon::MappedBuffer;

// Kernels with launch blocks, which the bundled cpu accelerators do not have.
constexpr char kLaunchManifest[] = R"({
  "bitstreamId": "fuzz", "version": "1", "platform": {"backend": "opencl"},
  "kernels": [
    {"kernelId": "scale", "name": ["scale"], "launch": {"global": "n", "local": 64},
     "arguments": [{"type": "float*", "name": "x", "access": "rw", "length": "n"},
                   {"type": "int", "name": "n"}, {"type": "float", "name": "factor"}]},
    {"kernelId": "grid", "name": ["grid"], "launch": {"global": ["w", "h * 2", "3"]},
     "arguments": [{"type": "double*", "name": "out", "access": "w", "length": "w*h*2"},
                   {"type": "uint64_t", "name": "w"}, {"type": "unsigned int", "name": "h"},
                   {"type": "short*", "name": "in", "length": "w"}]}
  ]})";

struct Fixture {
  std::map<std::string, atl::repository::KernelSpec> kernels;  // by accelerator id
  std::vector<const atl::repository::KernelSpec*> by_index;
  std::map<uint64_t, std::shared_ptr<MappedBuffer>> buffers;

  void AddManifest(const std::string& text) {
    auto manifest = atl::repository::ParseManifest(text);
    if (!manifest.ok()) {
      std::fprintf(stderr, "fuzz_protocol: a fixture manifest does not parse: %s\n",
                   manifest.status().message().c_str());
      std::abort();
    }
    for (const auto& kernel : manifest->kernels) {
      kernels[manifest->bitstream_id + "." + kernel.kernel_id] = kernel;
    }
  }

  Fixture() {
    std::istringstream paths(ATOLL_FUZZ_MANIFESTS);
    std::string path;
    while (std::getline(paths, path, '|')) {
      std::ifstream in(path);
      std::stringstream text;
      text << in.rdbuf();
      AddManifest(text.str());
    }
    AddManifest(kLaunchManifest);
    for (const auto& [id, kernel] : kernels) by_index.push_back(&kernel);
    // Buffer ids 1..4 exist on the fuzzed connection; others are unknown.
    const uint64_t sizes[] = {0, 60, 4096, 65536 + 3};
    for (uint64_t i = 0; i < 4; ++i) {
      int fd = ::memfd_create("fuzz", MFD_CLOEXEC | MFD_ALLOW_SEALING);
      if (fd < 0 || ::ftruncate(fd, static_cast<off_t>(sizes[i]) + 4096) != 0 ||
          ::fcntl(fd, F_ADD_SEALS, F_SEAL_SHRINK) != 0) {
        std::perror("fuzz_protocol: memfd");
        std::abort();
      }
      atl::UniqueFd owned(fd);
      auto mapped = MappedBuffer::Map(owned.get(), sizes[i]);
      if (!mapped.ok()) std::abort();
      buffers[i + 1] = *mapped;
    }
  }
};

const Fixture& GetFixture() {
  static const Fixture* fixture = new Fixture();
  return *fixture;
}

void CheckSubmit(const Fixture& fixture, const atl::wire::Submit& submit) {
  auto found = fixture.kernels.find(submit.accelerator());
  // Unknown ids still reach the argument checks: random bytes rarely spell an accelerator id.
  const atl::repository::KernelSpec& kernel =
      found != fixture.kernels.end()
          ? found->second
          : *fixture.by_index[submit.request_id() % fixture.by_index.size()];
  DecodedArguments decoded;
  atl::Status status = atl::daemon::DecodeArguments(
      submit.accelerator(), atl::repository::PreparedSignature(kernel), submit,
      [&](uint64_t id, std::string* why) -> std::shared_ptr<MappedBuffer> {
        auto it = fixture.buffers.find(id);
        if (it != fixture.buffers.end()) return it->second;
        *why = "buffer " + std::to_string(id) + " is unknown on this connection";
        return nullptr;
      },
      &decoded);
  if (!status.ok()) {
    if (status.code() != atl::Code::kInvalidArgument) std::abort();
    return;
  }
  if (decoded.args.size() != kernel.arguments.size()) std::abort();
  size_t next_buffer = 0;
  for (const auto& arg : decoded.args) {
    if (arg.kind != ATOLL_BACKEND_ARG_ARRAY) continue;
    const MappedBuffer& buffer = *decoded.buffers.at(next_buffer++);
    if (arg.size_bytes == 0) continue;
    const auto* begin = static_cast<const uint8_t*>(arg.data);
    if (begin < buffer.data() || arg.size_bytes > buffer.size_bytes() ||
        begin + arg.size_bytes > buffer.data() + buffer.size_bytes()) {
      std::abort();  // an accepted range outside its buffer
    }
  }
}

}  // namespace

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  // Protobuf logs every string field that is not UTF-8; the daemon sends that to debug level.
  google::protobuf::SetLogHandler(
      [](google::protobuf::LogLevel, const char*, int, const std::string&) {});
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const Fixture& fixture = GetFixture();
  static atl::wire::ClientMessage message;
  bool handshaken = false;
  while (size > 0) {
    size_t length = size;
    if (size >= 2) {
      length = std::min<size_t>(size - 2, data[0] | (static_cast<size_t>(data[1]) << 8));
      data += 2;
      size -= 2;
    }
    atl::Status status = atl::daemon::DecodeClientPacket(reinterpret_cast<const char*>(data),
                                                         length, handshaken, &message);
    data += length;
    size -= length;
    if (!status.ok()) return 0;  // the server closes the connection
    if (!handshaken) {
      handshaken = true;
      continue;
    }
    if (message.has_submit()) CheckSubmit(fixture, message.submit());
  }
  return 0;
}
