// Writes the seed corpus of fuzz_protocol (fuzz/corpus/protocol/): packet sequences a real client
// sends, framed as protocol_fuzzer.cpp reads them. Usage: fuzz_protocol_seeds FOLDER
#include <cstdint>
#include <cstring>
#include <fstream>
#include <iostream>
#include <string>
#include <vector>

#include "atoll.pb.h"

namespace {

using atl::wire::ClientMessage;

std::string Frame(const std::vector<ClientMessage>& packets) {
  std::string out;
  for (const auto& packet : packets) {
    std::string bytes = packet.SerializeAsString();
    out.push_back(static_cast<char>(bytes.size() & 0xff));
    out.push_back(static_cast<char>(bytes.size() >> 8));
    out += bytes;
  }
  return out;
}

ClientMessage Hello() {
  ClientMessage m;
  m.mutable_hello()->set_protocol_version(atl::wire::PROTOCOL_VERSION_CURRENT);
  m.mutable_hello()->set_client("libatoll 0.1.0");
  return m;
}

ClientMessage BufferAdd(uint64_t id, uint64_t size) {
  ClientMessage m;
  m.mutable_buffer_add()->set_buffer_id(id);
  m.mutable_buffer_add()->set_size_bytes(size);
  return m;
}

template <typename T>
std::string Bytes(T value) {
  return std::string(reinterpret_cast<const char*>(&value), sizeof(value));
}

struct Arg {
  bool array;
  uint64_t buffer = 0, offset = 0, size = 0;
  std::string scalar;
};

ClientMessage Submit(uint64_t request, const std::string& accelerator, const std::vector<Arg>& args,
                     uint64_t timeout_us = 0) {
  ClientMessage m;
  auto* s = m.mutable_submit();
  s->set_request_id(request);
  s->set_accelerator(accelerator);
  s->set_timeout_us(timeout_us);
  for (uint32_t i = 0; i < args.size(); ++i) {
    auto* a = s->add_arguments();
    a->set_index(i);
    if (args[i].array) {
      a->mutable_array()->set_buffer_id(args[i].buffer);
      a->mutable_array()->set_offset(args[i].offset);
      a->mutable_array()->set_size_bytes(args[i].size);
    } else {
      a->set_scalar(args[i].scalar);
    }
  }
  return m;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 2) {
    std::cerr << "usage: " << argv[0] << " FOLDER\n";
    return 2;
  }
  std::string folder = argv[1];
  auto write = [&](const std::string& name, const std::vector<ClientMessage>& packets) {
    std::ofstream(folder + "/" + name, std::ios::binary) << Frame(packets);
  };
  Arg a{true, 3, 0, 64}, b{true, 3, 64, 64}, c{true, 4, 0, 64};
  Arg n{false, 0, 0, 0, Bytes<int32_t>(16)};
  write("hello", {Hello()});
  write("vector_addition", {Hello(), BufferAdd(3, 4096), BufferAdd(4, 65539),
                            Submit(1, "vector.addition", {a, b, c, n})});
  write("vector_int_subtraction",
        {Hello(), Submit(7, "vector.int.subtraction", {a, b, c, n}, 5000)});
  Arg coef{true, 2, 0, 18}, src{true, 3, 0, 64}, dst{true, 4, 0, 64};
  write("vision_filter2d", {Hello(), Submit(2, "vision.filter2d",
                                            {coef,
                                             {false, 0, 0, 0, Bytes<int32_t>(3)},
                                             {false, 0, 0, 0, Bytes<float>(0.0625f)},
                                             {false, 0, 0, 0, Bytes<int16_t>(1)},
                                             {false, 0, 0, 0, Bytes<int32_t>(8)},
                                             {false, 0, 0, 0, Bytes<int32_t>(8)},
                                             src,
                                             dst})});
  write("testing_fill", {Hello(), Submit(3, "testing.fill",
                                         {{true, 4, 4, 40},
                                          {false, 0, 0, 0, Bytes<int32_t>(10)},
                                          {false, 0, 0, 0, Bytes<int32_t>(7)},
                                          {false, 0, 0, 0, Bytes<int32_t>(0)}})});
  write("fuzz_scale", {Hello(), Submit(4, "fuzz.scale",
                                       {{true, 3, 0, 256},
                                        {false, 0, 0, 0, Bytes<int32_t>(64)},
                                        {false, 0, 0, 0, Bytes<float>(2.0f)}})});
  write("fuzz_grid", {Hello(), Submit(5, "fuzz.grid",
                                      {{true, 4, 0, 8 * 2 * 2 * 3},
                                       {false, 0, 0, 0, Bytes<uint64_t>(2)},
                                       {false, 0, 0, 0, Bytes<uint32_t>(3)},
                                       {true, 3, 8, 4}})});
  ClientMessage cancel, remove, query;
  cancel.mutable_cancel()->set_request_id(1);
  remove.mutable_buffer_remove()->set_buffer_id(3);
  query.mutable_query()->set_query_id(9);
  query.mutable_query()->set_kind(atl::wire::Query::KIND_STATUS);
  write("cancel_remove_query", {Hello(), cancel, remove, query});
  write("noop_pipelined", {Hello(), Submit(1, "testing.noop", {}), Submit(2, "testing.noop", {}),
                           Submit(3, "testing.sleep", {{false, 0, 0, 0, Bytes<int32_t>(1)}})});
  ClientMessage old_hello = Hello();
  old_hello.mutable_hello()->set_protocol_version(2);
  write("version_mismatch", {old_hello});
  return 0;
}
