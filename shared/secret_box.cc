#include "shared/secret_box.h"

#include <sys/stat.h>

#include <cerrno>
#include <cstring>
#include <fstream>
#include <sstream>

#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/rand.h>
#include <openssl/sha.h>

#include <algorithm>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/escaping.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"

namespace hoist {
namespace {

constexpr size_t kKeyBytes = 32;
constexpr size_t kNonceBytes = 12;
constexpr size_t kTagBytes = 16;
// Bound to every sealed value: a token made for something else does not open.
constexpr absl::string_view kAad = "hoist env value v1";

std::string Hex(const unsigned char* data, size_t n) {
  std::string out;
  for (size_t i = 0; i < n; ++i) absl::StrAppendFormat(&out, "%02x", data[i]);
  return out;
}

std::string KeyId(const std::string& key) {
  unsigned char digest[SHA256_DIGEST_LENGTH];
  SHA256(reinterpret_cast<const unsigned char*>(key.data()), key.size(), digest);
  return Hex(digest, 4);
}

struct CipherCtx {
  EVP_CIPHER_CTX* ctx = EVP_CIPHER_CTX_new();
  ~CipherCtx() { EVP_CIPHER_CTX_free(ctx); }
};

}  // namespace

absl::StatusOr<std::unique_ptr<SecretBox>> SecretBox::FromKeys(std::vector<std::string> keys) {
  if (keys.empty()) return absl::InvalidArgumentError("no secrets key");
  std::vector<Key> out;
  for (std::string& k : keys) {
    if (k.size() != kKeyBytes) return absl::InvalidArgumentError("a secrets key is 32 bytes");
    out.push_back({KeyId(k), std::move(k)});
  }
  return std::unique_ptr<SecretBox>(new SecretBox(std::move(out)));
}

absl::StatusOr<std::unique_ptr<SecretBox>> SecretBox::FromFile(const std::string& path) {
  struct stat st {};
  if (stat(path.c_str(), &st) != 0) {
    return absl::FailedPreconditionError(absl::StrCat("--secrets-key-file ", path, ": ", std::strerror(errno),
                                                      " (make one with: openssl rand -hex 32 > ", path, " && chmod 600 ",
                                                      path, ")"));
  }
  if ((st.st_mode & 077) != 0) {
    return absl::FailedPreconditionError(absl::StrFormat(
        "--secrets-key-file %s has mode %04o: only hoistd may read it; chmod 600 %s", path, st.st_mode & 07777, path));
  }
  std::ifstream in(path);
  if (!in) return absl::FailedPreconditionError(absl::StrCat("cannot read --secrets-key-file ", path));
  std::vector<std::string> keys;
  std::string line;
  int number = 0;
  while (std::getline(in, line)) {
    ++number;
    absl::string_view text = absl::StripAsciiWhitespace(line);
    if (size_t hash = text.find('#'); hash != absl::string_view::npos) {
      text = absl::StripAsciiWhitespace(text.substr(0, hash));
    }
    if (text.empty()) continue;
    std::string bytes;
    const bool hex = text.size() == 2 * kKeyBytes &&
                     std::all_of(text.begin(), text.end(), [](char c) { return absl::ascii_isxdigit(c); });
    if (!hex) {
      return absl::InvalidArgumentError(absl::StrCat(path, ":", number,
                                                     ": a key is 64 hex digits (openssl rand -hex 32); this line is not"));
    }
    bytes = absl::HexStringToBytes(text);
    keys.push_back(std::move(bytes));
  }
  if (keys.empty()) {
    return absl::InvalidArgumentError(absl::StrCat(path, " holds no key; add one: openssl rand -hex 32 >> ", path));
  }
  return FromKeys(std::move(keys));
}

bool SecretBox::IsSealed(absl::string_view text) { return absl::StartsWith(text, kSealedPrefix); }

std::string SecretBox::Seal(absl::string_view plaintext) const {
  const Key& key = keys_.front();
  unsigned char nonce[kNonceBytes];
  RAND_bytes(nonce, sizeof(nonce));
  std::string out(kNonceBytes + plaintext.size() + kTagBytes, '\0');
  std::memcpy(out.data(), nonce, kNonceBytes);
  CipherCtx c;
  int len = 0;
  EVP_EncryptInit_ex(c.ctx, EVP_aes_256_gcm(), nullptr, nullptr, nullptr);
  EVP_CIPHER_CTX_ctrl(c.ctx, EVP_CTRL_GCM_SET_IVLEN, kNonceBytes, nullptr);
  EVP_EncryptInit_ex(c.ctx, nullptr, nullptr, reinterpret_cast<const unsigned char*>(key.bytes.data()), nonce);
  EVP_EncryptUpdate(c.ctx, nullptr, &len, reinterpret_cast<const unsigned char*>(kAad.data()),
                    static_cast<int>(kAad.size()));
  auto* body = reinterpret_cast<unsigned char*>(out.data() + kNonceBytes);
  EVP_EncryptUpdate(c.ctx, body, &len, reinterpret_cast<const unsigned char*>(plaintext.data()),
                    static_cast<int>(plaintext.size()));
  EVP_EncryptFinal_ex(c.ctx, body + len, &len);
  EVP_CIPHER_CTX_ctrl(c.ctx, EVP_CTRL_GCM_GET_TAG, kTagBytes, body + plaintext.size());
  return absl::StrCat(kSealedPrefix, key.id, ":", absl::Base64Escape(out));
}

absl::StatusOr<std::string> SecretBox::Open(absl::string_view token) const {
  absl::string_view rest = token;
  if (!absl::ConsumePrefix(&rest, kSealedPrefix)) return absl::InvalidArgumentError("not a sealed value");
  const size_t colon = rest.find(':');
  if (colon == absl::string_view::npos) return absl::InvalidArgumentError("a sealed value without a key id");
  const absl::string_view id = rest.substr(0, colon);
  std::string raw;
  if (!absl::Base64Unescape(rest.substr(colon + 1), &raw) || raw.size() < kNonceBytes + kTagBytes) {
    return absl::InvalidArgumentError("a sealed value that is not base64 of nonce, text and tag");
  }
  const Key* key = nullptr;
  for (const Key& k : keys_) {
    if (k.id == id) key = &k;
  }
  if (key == nullptr) {
    return absl::FailedPreconditionError(absl::StrCat("a value is sealed under key ", id,
                                                      ", which --secrets-key-file does not hold; put that key back "
                                                      "(below the current one)"));
  }
  const size_t n = raw.size() - kNonceBytes - kTagBytes;
  std::string out(n, '\0');
  const auto* nonce = reinterpret_cast<const unsigned char*>(raw.data());
  const auto* body = nonce + kNonceBytes;
  CipherCtx c;
  int len = 0;
  EVP_DecryptInit_ex(c.ctx, EVP_aes_256_gcm(), nullptr, nullptr, nullptr);
  EVP_CIPHER_CTX_ctrl(c.ctx, EVP_CTRL_GCM_SET_IVLEN, kNonceBytes, nullptr);
  EVP_DecryptInit_ex(c.ctx, nullptr, nullptr, reinterpret_cast<const unsigned char*>(key->bytes.data()), nonce);
  EVP_DecryptUpdate(c.ctx, nullptr, &len, reinterpret_cast<const unsigned char*>(kAad.data()),
                    static_cast<int>(kAad.size()));
  EVP_DecryptUpdate(c.ctx, reinterpret_cast<unsigned char*>(out.data()), &len, body, static_cast<int>(n));
  EVP_CIPHER_CTX_ctrl(c.ctx, EVP_CTRL_GCM_SET_TAG, kTagBytes, const_cast<unsigned char*>(body + n));
  if (EVP_DecryptFinal_ex(c.ctx, reinterpret_cast<unsigned char*>(out.data()) + len, &len) != 1) {
    return absl::DataLossError(absl::StrCat("a value sealed under key ", id, " does not authenticate: it was changed"));
  }
  return out;
}

bool SecretBox::SealedUnderOldKey(absl::string_view token) const {
  absl::string_view rest = token;
  if (!absl::ConsumePrefix(&rest, kSealedPrefix)) return false;
  return !absl::StartsWith(rest, absl::StrCat(current_key_id(), ":"));
}

absl::StatusOr<std::string> SecretBox::Reseal(absl::string_view text) const {
  if (IsCurrent(text)) return std::string(text);
  if (!IsSealed(text)) return Seal(text);
  auto clear = Open(text);
  if (!clear.ok()) return clear.status();
  return Seal(*clear);
}

std::string SecretBox::Fingerprint(absl::string_view value) const {
  unsigned char mac[EVP_MAX_MD_SIZE];
  unsigned int len = 0;
  const std::string& key = keys_.front().bytes;
  HMAC(EVP_sha256(), key.data(), static_cast<int>(key.size()), reinterpret_cast<const unsigned char*>(value.data()),
       value.size(), mac, &len);
  return absl::StrCat("hmac:", Hex(mac, 6));
}

}  // namespace hoist
