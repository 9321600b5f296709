#include "daemon/protocol.h"

#include <algorithm>

#include "repository/signature.h"

namespace atl::daemon {

Status DecodeClientPacket(const char* data, size_t size, bool handshaken,
                          wire::ClientMessage* message) {
  // kMaxPacketBytes bounds `size` far below INT_MAX; checked anyway, as callers are untrusted.
  if (size > static_cast<size_t>(INT32_MAX) ||
      !message->ParseFromArray(data, static_cast<int>(size))) {
    return InvalidArgumentError("protocol error: a message could not be decoded");
  }
  if (!handshaken) {
    if (!message->has_hello()) {
      return InvalidArgumentError("protocol error: the first message must be Hello");
    }
    if (message->hello().protocol_version() != wire::PROTOCOL_VERSION_CURRENT) {
      return FailedPreconditionError("protocol version mismatch: the client speaks version " +
                                     std::to_string(message->hello().protocol_version()) +
                                     ", this atolld speaks version " +
                                     std::to_string(wire::PROTOCOL_VERSION_CURRENT) +
                                     "; use a libatoll and atolld of the same release");
    }
    return OkStatus();
  }
  switch (message->kind_case()) {
    case wire::ClientMessage::kSubmit:
    case wire::ClientMessage::kBufferAdd:
    case wire::ClientMessage::kBufferRemove:
    case wire::ClientMessage::kCancel:
    case wire::ClientMessage::kQuery:
      return OkStatus();
    default:
      return InvalidArgumentError("protocol error: unexpected message");
  }
}

Status DecodeArguments(const std::string& accelerator,
                       const repository::PreparedSignature& signature, const wire::Submit& submit,
                       const BufferLookup& lookup, DecodedArguments* out) {
  const repository::KernelSpec& kernel = signature.kernel();
  // Arguments may arrive in any order; they must cover 0..n-1 exactly once.
  const int count = submit.arguments_size();
  std::vector<const wire::Argument*> ordered(static_cast<size_t>(count), nullptr);
  for (const auto& arg : submit.arguments()) {
    if (arg.index() >= static_cast<uint32_t>(count) || ordered[arg.index()] != nullptr) {
      return InvalidArgumentError(accelerator + ": argument indices must be 0.." +
                                  std::to_string(count - 1) + " without gaps or repeats");
    }
    ordered[arg.index()] = &arg;
  }

  out->args.resize(static_cast<size_t>(count));
  out->scalars.resize(static_cast<size_t>(count));
  std::vector<repository::ArgValue> values(static_cast<size_t>(count));
  for (int i = 0; i < count; ++i) {
    const wire::Argument& arg = *ordered[static_cast<size_t>(i)];
    atoll_backend_arg_v1& arg_out = out->args[static_cast<size_t>(i)];
    repository::ArgValue& value = values[static_cast<size_t>(i)];
    if (arg.has_array()) {
      const wire::ArrayRef& ref = arg.array();
      std::string why;
      std::shared_ptr<MappedBuffer> buffer = lookup(ref.buffer_id(), &why);
      if (buffer == nullptr) {
        return InvalidArgumentError(accelerator + ": argument " + std::to_string(i) + ": " + why);
      }
      if (ref.offset() > buffer->size_bytes() ||
          ref.size_bytes() > buffer->size_bytes() - ref.offset()) {
        return InvalidArgumentError(
            accelerator + ": argument " + std::to_string(i) + ": range of " +
            std::to_string(ref.size_bytes()) + " bytes at offset " + std::to_string(ref.offset()) +
            " runs past the end of its " + std::to_string(buffer->size_bytes()) + "-byte buffer");
      }
      value.is_array = true;
      value.size_bytes = ref.size_bytes();
      arg_out.kind = ATOLL_BACKEND_ARG_ARRAY;
      arg_out.data = buffer->data() == nullptr ? nullptr : buffer->data() + ref.offset();
      arg_out.size_bytes = ref.size_bytes();
      out->buffers.push_back(std::move(buffer));
    } else {
      // An argument with neither field set reads as an empty scalar, which the signature check
      // refuses for every type.
      out->scalars[static_cast<size_t>(i)] = arg.scalar();
      value.is_array = false;
      value.size_bytes = arg.scalar().size();
      value.scalar_data = out->scalars[static_cast<size_t>(i)].data();
      arg_out.kind = ATOLL_BACKEND_ARG_SCALAR;
      arg_out.data = out->scalars[static_cast<size_t>(i)].data();
      arg_out.size_bytes = arg.scalar().size();
    }
  }
  ATOLL_RETURN_IF_ERROR(signature.Check(accelerator, values));
  if (!kernel.launch.global.empty()) {
    ATOLL_ASSIGN_OR_RETURN(repository::LaunchGeometry geometry,
                           signature.Launch(accelerator, values));
    out->geometry.dims = geometry.dims;
    for (uint32_t d = 0; d < geometry.dims; ++d) {
      out->geometry.global[d] = geometry.global[d];
      out->geometry.local[d] = geometry.local[d];
    }
  }
  for (int i = 0; i < count; ++i) {
    const auto& spec = kernel.arguments[static_cast<size_t>(i)];
    atoll_backend_arg_v1& arg_out = out->args[static_cast<size_t>(i)];
    arg_out.type = spec.type.c_str();
    arg_out.access = static_cast<uint32_t>(spec.access) |
                     (spec.single_pass ? uint32_t{ATOLL_BACKEND_ACCESS_SINGLE_PASS} : 0);
    // Kernels read arrays as their element type, which needs natural alignment.
    uint64_t align = std::min<uint64_t>(spec.element_bytes, 16);
    if (arg_out.kind == ATOLL_BACKEND_ARG_ARRAY && align > 1 && (align & (align - 1)) == 0 &&
        reinterpret_cast<uintptr_t>(arg_out.data) % align != 0) {
      return InvalidArgumentError(
          accelerator + ": argument " + std::to_string(i) + " '" + spec.name +
          "' starts at a byte offset that is not a multiple of " + std::to_string(align) +
          " (the alignment of " + spec.type + "); pass a range that starts on an element");
    }
  }
  return OkStatus();
}

}  // namespace atl::daemon
