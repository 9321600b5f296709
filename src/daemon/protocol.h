// Decoding what a client sends: a packet into a checked ClientMessage, and a Submit's arguments
// into the backend's arguments, checked against the kernel's signature and the connection's
// buffers. Pure functions without I/O: the server and the engine call them on every packet, and
// the fuzz targets (fuzz/) call them directly. Thread-safe.
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "atoll.pb.h"
#include "atoll/backend.h"
#include "common/status.h"
#include "daemon/mapped_buffer.h"
#include "repository/manifest.h"
#include "repository/signature.h"

namespace atl::daemon {

// Decodes one packet into `message`. `handshaken` says whether the connection's Hello was
// accepted. An error means the connection must be closed with it: INVALID_ARGUMENT ("protocol
// error: ...") for bytes that do not decode, a first message other than Hello, or a message of no
// known kind (Hello again included); FAILED_PRECONDITION for a Hello of another protocol version,
// naming both versions.
Status DecodeClientPacket(const char* data, size_t size, bool handshaken,
                          wire::ClientMessage* message);

// The connection's buffer named by a request: the mapping, or null with `*why` saying why not
// ("buffer 7 is unknown on this connection ...").
using BufferLookup =
    std::function<std::shared_ptr<MappedBuffer>(uint64_t buffer_id, std::string* why)>;

// A request's arguments as a backend takes them, and the buffers they point into.
struct DecodedArguments {
  std::vector<std::shared_ptr<MappedBuffer>> buffers;  // keep the mappings alive
  std::vector<atoll_backend_arg_v1> args;              // in index order
  std::vector<std::string> scalars;  // args[i].data points into scalars[i] for scalars
  atoll_backend_geometry_v1 geometry{};
};

// Orders `submit`'s arguments by index (they must cover 0..n-1 once each), resolves arrays through
// `lookup` and checks that each range lies inside its buffer, checks the whole against the kernel's
// prepared signature, evaluates the launch geometry, and checks that each array
// starts on its element's natural alignment. Errors are INVALID_ARGUMENT and name `accelerator`
// and the argument. Moving `*out` afterwards keeps args' pointers valid (vectors move their
// storage).
// REQUIRES: `*out` is empty.
Status DecodeArguments(const std::string& accelerator,
                       const repository::PreparedSignature& signature, const wire::Submit& submit,
                       const BufferLookup& lookup, DecodedArguments* out);

}  // namespace atl::daemon
