#pragma once

// SHA-256, streamed or of one string, as lower-case hex: the one helper for
// manifests, backups, journals and plan digests.

#include <string>

#include "absl/strings/string_view.h"

namespace hoist {

class Sha256 {
 public:
  Sha256();
  ~Sha256();
  Sha256(const Sha256&) = delete;
  Sha256& operator=(const Sha256&) = delete;
  void Update(absl::string_view data);
  // Lower-case hex digest; the hasher must not be updated afterwards.
  std::string HexDigest();

 private:
  void* ctx_;  // EVP_MD_CTX*, kept opaque so that callers need no OpenSSL header
};

// Hex SHA-256 of a string.
std::string Sha256Hex(absl::string_view data);

}  // namespace hoist
