#pragma once

// Env values at rest: sealed with AES-256-GCM under a key only hoistd reads
// (--secrets-key-file), so that Postgres, its dumps and its backups never
// hold them in clear. A sealed value is one printable token,
//   hoist:sealed:v1:<key id>:<base64 of nonce(12) | ciphertext | tag(16)>
// where the key id is the first 8 hex digits of the key's SHA-256.
//
// The key file holds one key per line, 64 hex digits (32 random bytes, e.g.
// `openssl rand -hex 32`); '#' starts a comment. The first key seals; every
// key opens. Rotation: put a new key on the first line, keep the old ones
// below, restart the replicas (they seal again, under the new key, whatever
// is stored under an old one), then drop the old lines.

#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace hoist {

inline constexpr absl::string_view kSealedPrefix = "hoist:sealed:v1:";

class SecretBox {
 public:
  // Reads the key file. Refuses a file that group or others may read (the
  // key is hoistd's alone), an empty one, and lines that are not 64 hex
  // digits, naming the line.
  static absl::StatusOr<std::unique_ptr<SecretBox>> FromFile(const std::string& path);
  // Keys as 32 raw bytes each; the first seals.
  static absl::StatusOr<std::unique_ptr<SecretBox>> FromKeys(std::vector<std::string> keys);

  // True when text is a sealed token (of any key).
  static bool IsSealed(absl::string_view text);

  std::string Seal(absl::string_view plaintext) const;
  // INVALID_ARGUMENT for a malformed token, FAILED_PRECONDITION when no key
  // of the file has its id, DATA_LOSS when it does not authenticate.
  absl::StatusOr<std::string> Open(absl::string_view token) const;
  // True for a sealed token under a key other than the first.
  bool SealedUnderOldKey(absl::string_view token) const;
  // True for a token sealed under the first key: nothing to do for it.
  bool IsCurrent(absl::string_view text) const { return IsSealed(text) && !SealedUnderOldKey(text); }
  // `text` sealed under the first key: clear text sealed, a token under an
  // older key opened and sealed again, a current token as it is.
  absl::StatusOr<std::string> Reseal(absl::string_view text) const;
  // A short keyed fingerprint of a value, "hmac:1a2b3c4d5e6f": equal values
  // have equal fingerprints (under one key) and the value cannot be guessed
  // from it offline.
  std::string Fingerprint(absl::string_view value) const;

  const std::string& current_key_id() const { return keys_.front().id; }

 private:
  struct Key {
    std::string id;
    std::string bytes;
  };
  explicit SecretBox(std::vector<Key> keys) : keys_(std::move(keys)) {}
  std::vector<Key> keys_;
};

}  // namespace hoist
