// Private to src/repository: unpacking a package tarball safely into a staging folder.
// Thread safety: reentrant; each call works on its own destination.
#pragma once

#include <filesystem>

#include "common/status.h"

namespace atl::repository::internal {

// Extracts `tarball` (.tar, optionally compressed) into `destination`, an existing empty folder.
// Regular files, folders, hard links and symbolic links that stay inside are extracted; absolute
// paths, "..", links that lead outside, devices, fifos and sockets are refused, nothing is
// written through a link, and more than 4 GiB or 10000 entries is refused. INVALID_ARGUMENT names
// the tarball and the entry; RESOURCE_EXHAUSTED for the bounds. Blocks on disk I/O.
Status ExtractTarball(const std::filesystem::path& tarball,
                      const std::filesystem::path& destination);

// The extracted package's folder: `extracted` when bitstream.json is at its top, else its only
// visible folder when that holds bitstream.json. NOT_FOUND names `tarball` otherwise.
StatusOr<std::filesystem::path> FindPackageFolder(const std::filesystem::path& extracted,
                                                  const std::filesystem::path& tarball);

}  // namespace atl::repository::internal
