#include "shared/ca.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <ctime>
#include <algorithm>
#include <memory>

#include <openssl/bio.h>
#include <openssl/bn.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

#include "absl/status/status.h"
#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"

namespace hoist {
namespace {

struct OpenSslFree {
  void operator()(X509* p) const { X509_free(p); }
  void operator()(EVP_PKEY* p) const { EVP_PKEY_free(p); }
  void operator()(BIO* p) const { BIO_free(p); }
  void operator()(BIGNUM* p) const { BN_free(p); }
  void operator()(X509_EXTENSION* p) const { X509_EXTENSION_free(p); }
  void operator()(X509_STORE* p) const { X509_STORE_free(p); }
  void operator()(X509_STORE_CTX* p) const { X509_STORE_CTX_free(p); }
  void operator()(GENERAL_NAMES* p) const { GENERAL_NAMES_free(p); }
  void operator()(BASIC_CONSTRAINTS* p) const { BASIC_CONSTRAINTS_free(p); }
  void operator()(X509_CRL* p) const { X509_CRL_free(p); }
  void operator()(X509_REVOKED* p) const { X509_REVOKED_free(p); }
};
// ASN1_TIME and ASN1_INTEGER are the same C type, so each has a deleter of its own.
struct Asn1TimeFree {
  void operator()(ASN1_TIME* p) const { ASN1_TIME_free(p); }
};
struct Asn1IntegerFree {
  void operator()(ASN1_INTEGER* p) const { ASN1_INTEGER_free(p); }
};
using X509Ptr = std::unique_ptr<X509, OpenSslFree>;
using PkeyPtr = std::unique_ptr<EVP_PKEY, OpenSslFree>;
using BioPtr = std::unique_ptr<BIO, OpenSslFree>;
using BnPtr = std::unique_ptr<BIGNUM, OpenSslFree>;
using ExtPtr = std::unique_ptr<X509_EXTENSION, OpenSslFree>;
using StorePtr = std::unique_ptr<X509_STORE, OpenSslFree>;
using StoreCtxPtr = std::unique_ptr<X509_STORE_CTX, OpenSslFree>;
using GeneralNamesPtr = std::unique_ptr<GENERAL_NAMES, OpenSslFree>;
using BasicConstraintsPtr = std::unique_ptr<BASIC_CONSTRAINTS, OpenSslFree>;
using CrlPtr = std::unique_ptr<X509_CRL, OpenSslFree>;
using RevokedPtr = std::unique_ptr<X509_REVOKED, OpenSslFree>;
using Asn1TimePtr = std::unique_ptr<ASN1_TIME, Asn1TimeFree>;
using Asn1IntegerPtr = std::unique_ptr<ASN1_INTEGER, Asn1IntegerFree>;

constexpr absl::string_view kRolePrefix = "role:";
constexpr absl::string_view kLevelPrefix = "level:";

constexpr absl::Duration kClockSkew = absl::Minutes(5);

// Drains OpenSSL's thread-local error queue into one readable string.
std::string OpenSslErrors() {
  std::vector<std::string> parts;
  while (unsigned long e = ERR_get_error()) {
    char buf[256];
    ERR_error_string_n(e, buf, sizeof(buf));
    parts.emplace_back(buf);
  }
  return parts.empty() ? "no detail from OpenSSL" : absl::StrJoin(parts, "; ");
}

absl::Status OpenSslError(absl::string_view what) {
  return absl::InternalError(absl::StrCat(what, ": ", OpenSslErrors()));
}

std::string JoinPath(absl::string_view dir, absl::string_view file) {
  if (dir.empty()) return std::string(file);
  if (absl::EndsWith(dir, "/")) return absl::StrCat(dir, file);
  return absl::StrCat(dir, "/", file);
}

bool PathExists(const std::string& path) {
  struct stat st;
  return lstat(path.c_str(), &st) == 0;
}

absl::StatusOr<std::string> ReadFile(absl::string_view path, absl::string_view what) {
  std::string p(path);
  if (p.empty()) return absl::InvalidArgumentError(absl::StrCat("no path given for the ", what));
  int fd = open(p.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    int err = errno;
    if (err == ENOENT) {
      return absl::NotFoundError(absl::StrCat("the ", what, " file ", p, " does not exist"));
    }
    return absl::PermissionDeniedError(
        absl::StrCat("cannot read the ", what, " file ", p, ": ", std::strerror(err)));
  }
  std::string out;
  char buf[8192];
  for (;;) {
    ssize_t n = read(fd, buf, sizeof(buf));
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) {
      int err = errno;
      close(fd);
      return absl::PermissionDeniedError(
          absl::StrCat("cannot read the ", what, " file ", p, ": ", std::strerror(err)));
    }
    if (n == 0) break;
    out.append(buf, static_cast<size_t>(n));
    if (out.size() > (1 << 20)) {
      close(fd);
      return absl::InvalidArgumentError(absl::StrCat("the ", what, " file ", p, " is over 1 MiB: not a PEM file"));
    }
  }
  close(fd);
  return out;
}

// Writes `data` to `path` with `mode` atomically: a temporary file in the same
// directory, then link() (fails if path exists) or rename() when overwriting.
absl::Status WriteFileAtomic(const std::string& path, absl::string_view data, mode_t mode, bool overwrite) {
  std::string tmp = path + ".tmp-XXXXXX";
  int fd = mkstemp(tmp.data());
  if (fd < 0) return absl::PermissionDeniedError(absl::StrCat("cannot create ", tmp, ": ", std::strerror(errno)));
  auto fail = [&](absl::string_view step) {
    int err = errno;
    close(fd);
    unlink(tmp.c_str());
    return absl::InternalError(absl::StrCat(step, " ", path, ": ", std::strerror(err)));
  };
  if (fchmod(fd, mode) != 0) return fail("chmod");
  size_t off = 0;
  while (off < data.size()) {
    ssize_t n = write(fd, data.data() + off, data.size() - off);
    if (n < 0) {
      if (errno == EINTR) continue;
      return fail("write");
    }
    off += static_cast<size_t>(n);
  }
  if (fsync(fd) != 0) return fail("fsync");
  if (close(fd) != 0) {
    int err = errno;
    unlink(tmp.c_str());
    return absl::InternalError(absl::StrCat("close ", path, ": ", std::strerror(err)));
  }
  if (overwrite) {
    if (rename(tmp.c_str(), path.c_str()) != 0) {
      int err = errno;
      unlink(tmp.c_str());
      return absl::InternalError(absl::StrCat("rename to ", path, ": ", std::strerror(err)));
    }
    return absl::OkStatus();
  }
  int rc = link(tmp.c_str(), path.c_str());
  int err = errno;
  unlink(tmp.c_str());
  if (rc != 0) {
    if (err == EEXIST) return absl::AlreadyExistsError(absl::StrCat(path, " already exists"));
    return absl::InternalError(absl::StrCat("link to ", path, ": ", std::strerror(err)));
  }
  return absl::OkStatus();
}

// Runs `write` on a memory BIO and returns what it wrote.
template <typename WriteFn>
absl::StatusOr<std::string> ToPem(absl::string_view what, WriteFn write) {
  BioPtr bio(BIO_new(BIO_s_mem()));
  if (!bio || write(bio.get()) != 1) return OpenSslError(absl::StrCat("encoding ", what));
  char* data = nullptr;
  long len = BIO_get_mem_data(bio.get(), &data);
  return std::string(data, static_cast<size_t>(len));
}

absl::StatusOr<std::string> PemOfKey(EVP_PKEY* key) {
  return ToPem("a private key", [key](BIO* b) {
    return PEM_write_bio_PrivateKey(b, key, nullptr, nullptr, 0, nullptr, nullptr);
  });
}

absl::StatusOr<std::string> PemOfCert(X509* cert) {
  return ToPem("a certificate", [cert](BIO* b) { return PEM_write_bio_X509(b, cert); });
}

BioPtr MemBio(absl::string_view pem) {
  return BioPtr(BIO_new_mem_buf(pem.data(), static_cast<int>(pem.size())));
}

absl::StatusOr<X509Ptr> ParseCert(absl::string_view pem, absl::string_view where) {
  BioPtr bio = MemBio(pem);
  X509Ptr cert(bio ? PEM_read_bio_X509(bio.get(), nullptr, nullptr, nullptr) : nullptr);
  if (!cert) {
    ERR_clear_error();
    return absl::InvalidArgumentError(
        absl::StrCat(where, " does not hold a PEM certificate (\"-----BEGIN CERTIFICATE-----\")"));
  }
  return cert;
}

absl::StatusOr<PkeyPtr> ParseKey(absl::string_view pem, absl::string_view where) {
  BioPtr bio = MemBio(pem);
  PkeyPtr key(bio ? PEM_read_bio_PrivateKey(bio.get(), nullptr, nullptr, nullptr) : nullptr);
  if (!key) {
    ERR_clear_error();
    return absl::InvalidArgumentError(
        absl::StrCat(where, " does not hold an unencrypted PEM private key (\"-----BEGIN PRIVATE KEY-----\")"));
  }
  return key;
}

absl::StatusOr<PkeyPtr> NewP256Key() {
  PkeyPtr key(EVP_EC_gen("P-256"));
  if (!key) return OpenSslError("generating a P-256 key");
  return key;
}

absl::Time AbslTimeOf(const ASN1_TIME* t) {
  struct tm tm {};
  if (t == nullptr || ASN1_TIME_to_tm(t, &tm) != 1) return absl::InfinitePast();
  return absl::FromTimeT(timegm(&tm));
}

std::string FormatUtc(absl::Time t) {
  return absl::FormatTime("%Y-%m-%d %H:%M:%S UTC", t, absl::UTCTimeZone());
}

std::string CommonNameOf(const X509_NAME* name) {
  int idx = X509_NAME_get_index_by_NID(name, NID_commonName, -1);
  if (idx < 0) return "";
  const ASN1_STRING* s = X509_NAME_ENTRY_get_data(X509_NAME_get_entry(name, idx));
  unsigned char* utf8 = nullptr;
  int len = ASN1_STRING_to_UTF8(&utf8, s);
  if (len < 0) return "";
  std::string out(reinterpret_cast<char*>(utf8), static_cast<size_t>(len));
  OPENSSL_free(utf8);
  return out;
}

absl::Status AddExtension(X509* cert, X509* issuer, int nid, const std::string& value) {
  X509V3_CTX ctx;
  X509V3_set_ctx_nodb(&ctx);
  X509V3_set_ctx(&ctx, issuer, cert, nullptr, nullptr, 0);
  ExtPtr ext(X509V3_EXT_conf_nid(nullptr, &ctx, nid, value.c_str()));
  if (!ext || X509_add_ext(cert, ext.get(), -1) != 1) {
    return OpenSslError(absl::StrCat("adding the ", OBJ_nid2sn(nid), " extension \"", value, "\""));
  }
  return absl::OkStatus();
}

// A certificate with a random 127-bit serial, the validity window, the
// subject CN and the public key; extensions and signature are the caller's.
absl::StatusOr<X509Ptr> NewCert(absl::string_view common_name, EVP_PKEY* key, absl::Time not_before,
                                absl::Time not_after, const std::vector<std::string>& units = {}) {
  X509Ptr cert(X509_new());
  for (const std::string& unit : units) {
    if (!cert || X509_NAME_add_entry_by_NID(X509_get_subject_name(cert.get()), NID_organizationalUnitName,
                                            MBSTRING_UTF8, reinterpret_cast<const unsigned char*>(unit.data()),
                                            static_cast<int>(unit.size()), -1, 0) != 1) {
      return OpenSslError(absl::StrCat("adding OU=", unit, " to the certificate for \"", common_name, "\""));
    }
  }
  BnPtr serial(BN_new());
  if (!cert || !serial || X509_set_version(cert.get(), X509_VERSION_3) != 1 ||
      BN_rand(serial.get(), 127, BN_RAND_TOP_ANY, BN_RAND_BOTTOM_ANY) != 1 ||
      BN_to_ASN1_INTEGER(serial.get(), X509_get_serialNumber(cert.get())) == nullptr ||
      ASN1_TIME_set(X509_getm_notBefore(cert.get()), absl::ToTimeT(not_before)) == nullptr ||
      ASN1_TIME_set(X509_getm_notAfter(cert.get()), absl::ToTimeT(not_after)) == nullptr ||
      X509_set_pubkey(cert.get(), key) != 1 ||
      X509_NAME_add_entry_by_NID(X509_get_subject_name(cert.get()), NID_commonName, MBSTRING_UTF8,
                                 reinterpret_cast<const unsigned char*>(common_name.data()),
                                 static_cast<int>(common_name.size()), -1, 0) != 1) {
    return OpenSslError(absl::StrCat("building the certificate for \"", common_name, "\""));
  }
  return cert;
}

// Normalises one SAN to "DNS:name" or "IP:addr"; INVALID_ARGUMENT otherwise.
absl::StatusOr<std::string> NormalizeSan(absl::string_view san) {
  std::string value(absl::StripAsciiWhitespace(san));
  bool want_ip = false, want_dns = false;
  if (absl::StartsWithIgnoreCase(value, "IP:")) {
    value = value.substr(3);
    want_ip = true;
  } else if (absl::StartsWithIgnoreCase(value, "DNS:")) {
    value = value.substr(4);
    want_dns = true;
  }
  if (!want_dns) {
    unsigned char buf[sizeof(in6_addr)];
    char text[INET6_ADDRSTRLEN];
    if (inet_pton(AF_INET, value.c_str(), buf) == 1) {
      inet_ntop(AF_INET, buf, text, sizeof(text));
      return absl::StrCat("IP:", text);
    }
    if (inet_pton(AF_INET6, value.c_str(), buf) == 1) {
      inet_ntop(AF_INET6, buf, text, sizeof(text));
      return absl::StrCat("IP:", text);
    }
    if (want_ip) {
      return absl::InvalidArgumentError(
          absl::StrCat("subjectAltName \"", san, "\" is not an IPv4 or IPv6 address"));
    }
  }
  // Host names: the same rule as identity names, but longer is allowed.
  if (value.empty() || value.size() > 253) {
    return absl::InvalidArgumentError(
        absl::StrCat("subjectAltName \"", san, "\" must be a host name (1 to 253 characters) or an IP address"));
  }
  for (absl::string_view label : absl::StrSplit(value, '.')) {
    bool ok = !label.empty() && label.size() <= 63 && absl::ascii_isalnum(label.front()) &&
              absl::ascii_isalnum(label.back());
    for (char c : label) ok = ok && (absl::ascii_isalnum(c) || c == '-');
    if (!ok) {
      return absl::InvalidArgumentError(absl::StrCat(
          "subjectAltName \"", san,
          "\" is neither an IP address nor a host name (letters, digits and '-' in dot-separated parts)"));
    }
  }
  return absl::StrCat("DNS:", absl::AsciiStrToLower(value));
}

absl::Status CheckKeyMatches(X509* cert, EVP_PKEY* key, absl::string_view cert_path, absl::string_view key_path) {
  if (X509_check_private_key(cert, key) != 1) {
    ERR_clear_error();
    return absl::InvalidArgumentError(absl::StrCat("the key ", key_path, " does not belong to the certificate ",
                                                   cert_path, ": pass the key issued with it"));
  }
  return absl::OkStatus();
}

absl::Status VerifyParsed(X509* ca, X509* cert, absl::Time at) {
  StorePtr store(X509_STORE_new());
  StoreCtxPtr ctx(X509_STORE_CTX_new());
  if (!store || !ctx || X509_STORE_add_cert(store.get(), ca) != 1 ||
      X509_STORE_CTX_init(ctx.get(), store.get(), cert, nullptr) != 1) {
    return OpenSslError("setting up certificate verification");
  }
  X509_STORE_CTX_set_time(ctx.get(), 0, absl::ToTimeT(at));
  if (X509_verify_cert(ctx.get()) != 1) {
    int err = X509_STORE_CTX_get_error(ctx.get());
    ERR_clear_error();
    return absl::UnauthenticatedError(X509_verify_cert_error_string(err));
  }
  return absl::OkStatus();
}

std::string SerialHex(const ASN1_INTEGER* serial) {
  BnPtr bn(ASN1_INTEGER_to_BN(serial, nullptr));
  if (!bn) return "";
  char* hex = BN_bn2hex(bn.get());
  if (hex == nullptr) return "";
  std::string out(hex);
  OPENSSL_free(hex);
  return out;
}

// Reads OU=role:<kind> and OU=level:<level>; anything else is ignored.
void ReadUnits(const X509_NAME* name, CertInfo* info) {
  for (int idx = X509_NAME_get_index_by_NID(name, NID_organizationalUnitName, -1); idx >= 0;
       idx = X509_NAME_get_index_by_NID(name, NID_organizationalUnitName, idx)) {
    const ASN1_STRING* data = X509_NAME_ENTRY_get_data(X509_NAME_get_entry(name, idx));
    absl::string_view unit(reinterpret_cast<const char*>(ASN1_STRING_get0_data(data)),
                           static_cast<size_t>(ASN1_STRING_length(data)));
    if (absl::ConsumePrefix(&unit, kRolePrefix)) {
      if (auto kind = ParseCertKind(unit); kind.ok()) info->kind = *kind;
    } else if (absl::ConsumePrefix(&unit, kLevelPrefix)) {
      if (auto level = ParseOperatorLevel(unit); level.ok()) info->level = *level;
    }
  }
}

CertInfo InfoOf(X509* cert) {
  CertInfo info;
  ReadUnits(X509_get_subject_name(cert), &info);
  info.serial = SerialHex(X509_get0_serialNumber(cert));
  info.common_name = CommonNameOf(X509_get_subject_name(cert));
  info.issuer_common_name = CommonNameOf(X509_get_issuer_name(cert));
  info.not_before = AbslTimeOf(X509_get0_notBefore(cert));
  info.not_after = AbslTimeOf(X509_get0_notAfter(cert));
  GeneralNamesPtr names(
      static_cast<GENERAL_NAMES*>(X509_get_ext_d2i(cert, NID_subject_alt_name, nullptr, nullptr)));
  for (int i = 0; names && i < sk_GENERAL_NAME_num(names.get()); ++i) {
    const GENERAL_NAME* gn = sk_GENERAL_NAME_value(names.get(), i);
    if (gn->type == GEN_DNS) {
      const ASN1_STRING* s = gn->d.dNSName;
      info.dns_names.emplace_back(reinterpret_cast<const char*>(ASN1_STRING_get0_data(s)),
                                  static_cast<size_t>(ASN1_STRING_length(s)));
    } else if (gn->type == GEN_IPADD) {
      const ASN1_OCTET_STRING* s = gn->d.iPAddress;
      char text[INET6_ADDRSTRLEN] = {};
      int len = ASN1_STRING_length(s);
      int family = len == 4 ? AF_INET : len == 16 ? AF_INET6 : -1;
      if (family > 0 && inet_ntop(family, ASN1_STRING_get0_data(s), text, sizeof(text)) != nullptr) {
        info.ip_addresses.emplace_back(text);
      }
    }
  }
  BasicConstraintsPtr bc(
      static_cast<BASIC_CONSTRAINTS*>(X509_get_ext_d2i(cert, NID_basic_constraints, nullptr, nullptr)));
  info.is_ca = bc && bc->ca;
  uint32_t xku = X509_get_extended_key_usage(cert);  // UINT32_MAX when absent
  info.server_auth = (xku & XKU_SSL_SERVER) != 0;
  info.client_auth = (xku & XKU_SSL_CLIENT) != 0;
  ERR_clear_error();
  return info;
}

struct LoadedCa {
  X509Ptr cert;
  PkeyPtr key;
};

absl::StatusOr<LoadedCa> LoadCa(absl::string_view dir) {
  std::string key_path = JoinPath(dir, "ca.key");
  std::string cert_path = JoinPath(dir, "ca.crt");
  auto key_pem = ReadFile(key_path, "CA key");
  auto cert_pem = ReadFile(cert_path, "CA certificate");
  if (absl::IsNotFound(key_pem.status()) || absl::IsNotFound(cert_pem.status())) {
    return absl::FailedPreconditionError(absl::StrCat("no CA in ", dir, " (", key_path, " and ", cert_path,
                                                      "): create one with `hoist ca init --dir ", dir, "`"));
  }
  if (!key_pem.ok()) return key_pem.status();
  if (!cert_pem.ok()) return cert_pem.status();
  LoadedCa ca;
  auto cert = ParseCert(*cert_pem, cert_path);
  if (!cert.ok()) return cert.status();
  auto key = ParseKey(*key_pem, key_path);
  if (!key.ok()) return key.status();
  ca.cert = std::move(*cert);
  ca.key = std::move(*key);
  if (absl::Status s = CheckKeyMatches(ca.cert.get(), ca.key.get(), cert_path, key_path); !s.ok()) return s;
  CertInfo info = InfoOf(ca.cert.get());
  if (!info.is_ca) {
    return absl::FailedPreconditionError(absl::StrCat(cert_path, " is not a CA certificate (no CA:TRUE)"));
  }
  if (info.not_after < absl::Now()) {
    return absl::FailedPreconditionError(absl::StrCat("the CA in ", dir, " expired on ", FormatUtc(info.not_after),
                                                      ": create a new one with `hoist ca init --force --dir ", dir,
                                                      "` and reissue every certificate"));
  }
  return ca;
}

}  // namespace

absl::string_view CertKindName(CertKind kind) {
  switch (kind) {
    case CertKind::kController:
      return "controller";
    case CertKind::kAgent:
      return "agent";
    case CertKind::kOperator:
      return "operator";
  }
  return "unknown";
}

absl::StatusOr<CertKind> ParseCertKind(absl::string_view text) {
  for (CertKind k : {CertKind::kController, CertKind::kAgent, CertKind::kOperator}) {
    if (text == CertKindName(k)) return k;
  }
  return absl::InvalidArgumentError(
      absl::StrCat("certificate kind \"", text, "\" is not one of controller, agent, operator"));
}

absl::string_view OperatorLevelName(OperatorLevel level) {
  switch (level) {
    case OperatorLevel::kViewer: return "viewer";
    case OperatorLevel::kDeployer: return "deployer";
    case OperatorLevel::kAdmin: return "admin";
    case OperatorLevel::kNone: break;
  }
  return "none";
}

absl::StatusOr<OperatorLevel> ParseOperatorLevel(absl::string_view text) {
  for (OperatorLevel level : {OperatorLevel::kViewer, OperatorLevel::kDeployer, OperatorLevel::kAdmin}) {
    if (text == OperatorLevelName(level)) return level;
  }
  return absl::InvalidArgumentError(
      absl::StrCat("unknown operator level \"", text, "\": use viewer, deployer or admin"));
}

absl::Status ValidateCertName(absl::string_view name) {
  auto bad = [&](absl::string_view why) {
    return absl::InvalidArgumentError(absl::StrCat("name \"", name, "\" ", why));
  };
  if (name.empty()) return absl::InvalidArgumentError("name is empty: give the agent id, controller or operator name");
  if (name.size() > 64) return bad("is longer than 64 characters (the limit of a certificate common name)");
  for (char c : name) {
    if (!absl::ascii_isalnum(c) && c != '-' && c != '.') {
      return bad(absl::StrCat("contains '", std::string(1, c),
                              "': use letters, digits, '-' and '.', like a host name"));
    }
  }
  if (!absl::ascii_isalnum(name.front()) || !absl::ascii_isalnum(name.back())) {
    return bad("must start and end with a letter or digit");
  }
  if (absl::StrContains(name, "..")) return bad("has an empty part between dots");
  return absl::OkStatus();
}

absl::StatusOr<KeyAndCert> CaInit(absl::string_view dir_view, const CaInitOptions& options) {
  std::string dir(dir_view.empty() ? "." : dir_view);
  KeyAndCert files{JoinPath(dir, "ca.key"), JoinPath(dir, "ca.crt")};
  if (!options.force && (PathExists(files.key_path) || PathExists(files.cert_path))) {
    return absl::AlreadyExistsError(absl::StrCat(
        "a CA already exists in ", dir, " (", files.key_path, ", ", files.cert_path,
        "); refusing to replace it, since every certificate it issued would stop verifying. "
        "To replace it anyway, pass --force (hoist ca init --force --dir ",
        dir, ")"));
  }
  if (mkdir(dir.c_str(), 0700) != 0 && errno != EEXIST) {
    return absl::PermissionDeniedError(absl::StrCat("cannot create the CA directory ", dir, ": ", std::strerror(errno)));
  }
  auto key = NewP256Key();
  if (!key.ok()) return key.status();
  absl::Time now = absl::Now();
  auto cert = NewCert(kFleetCaCommonName, key->get(), now - kClockSkew, now + options.validity);
  if (!cert.ok()) return cert.status();
  X509* c = cert->get();
  if (X509_set_issuer_name(c, X509_get_subject_name(c)) != 1) return OpenSslError("setting the CA issuer");
  for (auto [nid, value] : {std::pair<int, const char*>{NID_basic_constraints, "critical,CA:TRUE"},
                            {NID_key_usage, "critical,keyCertSign,cRLSign"},
                            {NID_subject_key_identifier, "hash"},
                            {NID_authority_key_identifier, "keyid:always"}}) {
    if (absl::Status s = AddExtension(c, c, nid, value); !s.ok()) return s;
  }
  if (X509_sign(c, key->get(), EVP_sha256()) <= 0) return OpenSslError("signing the CA certificate");
  auto key_pem = PemOfKey(key->get());
  if (!key_pem.ok()) return key_pem.status();
  auto cert_pem = PemOfCert(c);
  if (!cert_pem.ok()) return cert_pem.status();
  if (absl::Status s = WriteFileAtomic(files.key_path, *key_pem, 0600, options.force); !s.ok()) return s;
  if (absl::Status s = WriteFileAtomic(files.cert_path, *cert_pem, 0644, options.force); !s.ok()) return s;
  return files;
}

absl::StatusOr<IssuedCert> CaIssue(absl::string_view dir_view, CertKind kind, absl::string_view name,
                                   const CaIssueOptions& options) {
  if (absl::Status s = ValidateCertName(name); !s.ok()) return s;
  if (options.validity <= absl::ZeroDuration()) {
    return absl::InvalidArgumentError("validity must be positive (--days 1 or more)");
  }
  if (kind == CertKind::kOperator && options.level == OperatorLevel::kNone) {
    return absl::InvalidArgumentError(absl::StrCat(
        "an operator certificate needs a level: --level viewer (read everything but secrets), deployer (plan, "
        "upgrade, roll back, cancel, cut over) or admin (also apply stacks and restore backups), e.g. "
        "`hoist ca issue operator ", name, " --level deployer`"));
  }
  if (kind != CertKind::kOperator && options.level != OperatorLevel::kNone) {
    return absl::InvalidArgumentError(absl::StrCat("--level is for operator certificates, not a ",
                                                   CertKindName(kind), "'s"));
  }
  std::string dir(dir_view.empty() ? "." : dir_view);
  std::string base = absl::StrCat(CertKindName(kind), "-", name);
  IssuedCert out;
  out.files = {JoinPath(dir, base + ".key"), JoinPath(dir, base + ".crt")};

  std::vector<std::string> requested;
  if (kind == CertKind::kController) requested = {"DNS:localhost", "IP:127.0.0.1"};
  requested.push_back(absl::StrCat("DNS:", name));
  requested.insert(requested.end(), options.sans.begin(), options.sans.end());
  for (const std::string& san : requested) {
    auto norm = NormalizeSan(san);
    if (!norm.ok()) return norm.status();
    if (std::find(out.sans.begin(), out.sans.end(), *norm) == out.sans.end()) out.sans.push_back(*norm);
  }

  if (!options.force && (PathExists(out.files.key_path) || PathExists(out.files.cert_path))) {
    return absl::AlreadyExistsError(absl::StrCat(CertKindName(kind), " \"", name, "\" already has a certificate in ",
                                                 dir, " (", out.files.cert_path,
                                                 "); to replace it (renewal), pass --force"));
  }
  auto ca = LoadCa(dir);
  if (!ca.ok()) return ca.status();

  auto key = NewP256Key();
  if (!key.ok()) return key.status();
  absl::Time not_before = options.not_before.value_or(absl::Now() - kClockSkew);
  out.not_after = not_before + options.validity;
  std::vector<std::string> units = {absl::StrCat(kRolePrefix, CertKindName(kind))};
  if (kind == CertKind::kOperator) units.push_back(absl::StrCat(kLevelPrefix, OperatorLevelName(options.level)));
  auto cert = NewCert(name, key->get(), not_before, out.not_after, units);
  if (!cert.ok()) return cert.status();
  X509* c = cert->get();
  if (X509_set_issuer_name(c, X509_get_subject_name(ca->cert.get())) != 1) {
    return OpenSslError("setting the certificate's issuer");
  }
  std::string eku = kind == CertKind::kController ? "serverAuth,clientAuth" : "clientAuth";
  for (auto [nid, value] : {std::pair<int, std::string>{NID_basic_constraints, "critical,CA:FALSE"},
                            {NID_key_usage, "critical,digitalSignature"},
                            {NID_ext_key_usage, eku},
                            {NID_subject_alt_name, absl::StrJoin(out.sans, ",")},
                            {NID_subject_key_identifier, "hash"},
                            {NID_authority_key_identifier, "keyid:always"}}) {
    if (absl::Status s = AddExtension(c, ca->cert.get(), nid, value); !s.ok()) return s;
  }
  if (X509_sign(c, ca->key.get(), EVP_sha256()) <= 0) return OpenSslError("signing the certificate");
  auto key_pem = PemOfKey(key->get());
  if (!key_pem.ok()) return key_pem.status();
  auto cert_pem = PemOfCert(c);
  if (!cert_pem.ok()) return cert_pem.status();
  if (absl::Status s = WriteFileAtomic(out.files.key_path, *key_pem, 0600, options.force); !s.ok()) return s;
  if (absl::Status s = WriteFileAtomic(out.files.cert_path, *cert_pem, 0644, options.force); !s.ok()) return s;
  return out;
}

absl::StatusOr<CertInfo> InspectCertificate(absl::string_view cert_pem) {
  auto cert = ParseCert(cert_pem, "the text");
  if (!cert.ok()) return cert.status();
  return InfoOf(cert->get());
}

absl::Status VerifyCertificate(absl::string_view ca_pem, absl::string_view cert_pem, absl::Time at) {
  auto ca = ParseCert(ca_pem, "the CA text");
  if (!ca.ok()) return ca.status();
  auto cert = ParseCert(cert_pem, "the certificate text");
  if (!cert.ok()) return cert.status();
  return VerifyParsed(ca->get(), cert->get(), at);
}

absl::StatusOr<TlsMaterial> LoadTlsMaterial(absl::string_view ca_path, absl::string_view cert_path,
                                            absl::string_view key_path, TlsRole role, absl::Time now) {
  TlsMaterial m;
  auto ca_pem = ReadFile(ca_path, "CA certificate");
  if (!ca_pem.ok()) return ca_pem.status();
  auto cert_pem = ReadFile(cert_path, "certificate");
  if (!cert_pem.ok()) return cert_pem.status();
  auto key_pem = ReadFile(key_path, "private key");
  if (!key_pem.ok()) return key_pem.status();
  auto ca = ParseCert(*ca_pem, ca_path);
  if (!ca.ok()) return ca.status();
  auto cert = ParseCert(*cert_pem, cert_path);
  if (!cert.ok()) return cert.status();
  auto key = ParseKey(*key_pem, key_path);
  if (!key.ok()) return key.status();
  if (absl::Status s = CheckKeyMatches(cert->get(), key->get(), cert_path, key_path); !s.ok()) return s;

  m.cert = InfoOf(cert->get());
  const std::string reissue = absl::StrCat("issue a new one with `hoist ca issue ... ", m.cert.common_name, "`");
  if (m.cert.not_after < now) {
    return absl::FailedPreconditionError(absl::StrCat("the certificate ", cert_path, " (CN ", m.cert.common_name,
                                                      ") expired on ", FormatUtc(m.cert.not_after), ": ", reissue));
  }
  if (m.cert.not_before > now) {
    return absl::FailedPreconditionError(absl::StrCat("the certificate ", cert_path, " is not valid before ",
                                                      FormatUtc(m.cert.not_before),
                                                      ": check this machine's clock"));
  }
  CertInfo ca_info = InfoOf(ca->get());
  if (ca_info.not_after < now) {
    return absl::FailedPreconditionError(absl::StrCat("the CA certificate ", ca_path, " expired on ",
                                                      FormatUtc(ca_info.not_after)));
  }
  if (absl::Status s = VerifyParsed(ca->get(), cert->get(), now); !s.ok()) {
    return absl::FailedPreconditionError(absl::StrCat("the certificate ", cert_path, " (issuer \"",
                                                      m.cert.issuer_common_name, "\") does not verify against the CA ",
                                                      ca_path, ": ", s.message(),
                                                      "; use the CA that issued it, or ", reissue));
  }
  if (role == TlsRole::kServer && !m.cert.server_auth) {
    return absl::FailedPreconditionError(absl::StrCat("the certificate ", cert_path,
                                                      " is not for servers (no serverAuth): use a controller "
                                                      "certificate (hoist ca issue controller NAME)"));
  }
  if (role == TlsRole::kClient && !m.cert.client_auth) {
    return absl::FailedPreconditionError(
        absl::StrCat("the certificate ", cert_path, " is not for clients (no clientAuth)"));
  }
  m.ca_pem = std::move(*ca_pem);
  m.cert_pem = std::move(*cert_pem);
  m.key_pem = std::move(*key_pem);
  return m;
}

bool RevocationList::Contains(absl::string_view serial) const {
  return std::binary_search(serials.begin(), serials.end(), serial);
}

namespace {

absl::StatusOr<CrlPtr> ParseCrl(absl::string_view pem, absl::string_view where) {
  BioPtr bio = MemBio(pem);
  CrlPtr crl(bio ? PEM_read_bio_X509_CRL(bio.get(), nullptr, nullptr, nullptr) : nullptr);
  if (!crl) {
    ERR_clear_error();
    return absl::InvalidArgumentError(absl::StrCat(where, " is not a PEM certificate revocation list"));
  }
  return crl;
}

absl::Status CheckCrlSignature(X509_CRL* crl, X509* ca, absl::string_view where) {
  if (X509_CRL_verify(crl, X509_get0_pubkey(ca)) != 1) {
    ERR_clear_error();
    return absl::UnauthenticatedError(
        absl::StrCat(where, " is not signed by this fleet's CA; write it with `hoist ca revoke` from that CA"));
  }
  return absl::OkStatus();
}

// The certificate files NAME may mean: <dir>/<kind>-<name>.crt.
std::vector<std::pair<CertKind, std::string>> CertFilesNamed(const std::string& dir, absl::string_view name,
                                                            std::optional<CertKind> only) {
  std::vector<std::pair<CertKind, std::string>> found;
  for (CertKind kind : {CertKind::kController, CertKind::kAgent, CertKind::kOperator}) {
    if (only && *only != kind) continue;
    std::string path = JoinPath(dir, absl::StrCat(CertKindName(kind), "-", name, ".crt"));
    if (PathExists(path)) found.emplace_back(kind, path);
  }
  return found;
}

}  // namespace

absl::StatusOr<Revoked> CaRevoke(absl::string_view dir_view, absl::string_view name, const CaRevokeOptions& options) {
  std::string dir(dir_view.empty() ? "." : dir_view);
  auto ca = LoadCa(dir);
  if (!ca.ok()) return ca.status();
  Revoked out;
  out.crl_path = JoinPath(dir, kCrlFileName);
  if (!options.serial.empty()) {
    BnPtr bn;
    BIGNUM* raw = nullptr;
    if (BN_hex2bn(&raw, options.serial.c_str()) != static_cast<int>(options.serial.size())) {
      BN_free(raw);
      return absl::InvalidArgumentError(absl::StrCat("--serial \"", options.serial, "\" is not a hex number"));
    }
    bn.reset(raw);
    char* hex = BN_bn2hex(bn.get());
    out.serial = hex;
    OPENSSL_free(hex);
    out.subject = absl::StrCat("serial ", out.serial);
  } else {
    if (absl::Status s = ValidateCertName(name); !s.ok()) return s;
    auto files = CertFilesNamed(dir, name, options.kind);
    if (files.empty()) {
      return absl::NotFoundError(absl::StrCat("no certificate named \"", name, "\" in ", dir,
                                              " (KIND-", name, ".crt); give its serial with --serial HEX instead"));
    }
    if (files.size() > 1) {
      return absl::InvalidArgumentError(absl::StrCat("\"", name, "\" names certificates of ", files.size(),
                                                     " kinds in ", dir, "; say which with --kind"));
    }
    auto pem = ReadFile(files[0].second, "certificate");
    if (!pem.ok()) return pem.status();
    auto cert = ParseCert(*pem, files[0].second);
    if (!cert.ok()) return cert.status();
    out.serial = SerialHex(X509_get0_serialNumber(cert->get()));
    out.subject = absl::StrCat(CertKindName(files[0].first), " ", name);
  }

  // Keep what the list held, with the dates it was revoked on.
  CrlPtr crl(X509_CRL_new());
  if (!crl || X509_CRL_set_version(crl.get(), 1) != 1 ||
      X509_CRL_set_issuer_name(crl.get(), X509_get_subject_name(ca->cert.get())) != 1) {
    return OpenSslError("building the revocation list");
  }
  if (PathExists(out.crl_path)) {
    auto old_pem = ReadFile(out.crl_path, "revocation list");
    if (!old_pem.ok()) return old_pem.status();
    auto old = ParseCrl(*old_pem, out.crl_path);
    if (!old.ok()) return old.status();
    if (absl::Status s = CheckCrlSignature(old->get(), ca->cert.get(), out.crl_path); !s.ok()) return s;
    STACK_OF(X509_REVOKED)* entries = X509_CRL_get_REVOKED(old->get());
    for (int i = 0; i < sk_X509_REVOKED_num(entries); ++i) {
      X509_REVOKED* entry = sk_X509_REVOKED_value(entries, i);
      if (SerialHex(X509_REVOKED_get0_serialNumber(entry)) == out.serial) out.already = true;
      RevokedPtr copy(X509_REVOKED_dup(entry));
      if (!copy || X509_CRL_add0_revoked(crl.get(), copy.get()) != 1) return OpenSslError("copying the list");
      copy.release();
    }
  }
  Asn1TimePtr now(ASN1_TIME_set(nullptr, absl::ToTimeT(absl::Now())));
  if (!now || X509_CRL_set1_lastUpdate(crl.get(), now.get()) != 1) return OpenSslError("dating the list");
  if (!out.already) {
    BIGNUM* raw = nullptr;
    BN_hex2bn(&raw, out.serial.c_str());
    BnPtr bn(raw);
    Asn1IntegerPtr serial(bn ? BN_to_ASN1_INTEGER(bn.get(), nullptr) : nullptr);
    RevokedPtr entry(X509_REVOKED_new());
    if (!serial || !entry || X509_REVOKED_set_serialNumber(entry.get(), serial.get()) != 1 ||
        X509_REVOKED_set_revocationDate(entry.get(), now.get()) != 1 ||
        X509_CRL_add0_revoked(crl.get(), entry.get()) != 1) {
      return OpenSslError("adding the serial to the list");
    }
    entry.release();
  }
  if (X509_CRL_sort(crl.get()) != 1 || X509_CRL_sign(crl.get(), ca->key.get(), EVP_sha256()) <= 0) {
    return OpenSslError("signing the revocation list");
  }
  out.total_revoked = static_cast<size_t>(sk_X509_REVOKED_num(X509_CRL_get_REVOKED(crl.get())));
  auto pem = ToPem("the revocation list", [&](BIO* bio) { return PEM_write_bio_X509_CRL(bio, crl.get()); });
  if (!pem.ok()) return pem.status();
  if (absl::Status s = WriteFileAtomic(out.crl_path, *pem, 0644, /*overwrite=*/true); !s.ok()) return s;
  return out;
}

absl::StatusOr<RevocationList> ParseRevocationList(absl::string_view ca_pem, absl::string_view crl_pem) {
  auto ca = ParseCert(ca_pem, "the CA certificate");
  if (!ca.ok()) return ca.status();
  auto crl = ParseCrl(crl_pem, "the revocation list");
  if (!crl.ok()) return crl.status();
  if (absl::Status s = CheckCrlSignature(crl->get(), ca->get(), "the revocation list"); !s.ok()) return s;
  RevocationList list;
  list.last_update = AbslTimeOf(X509_CRL_get0_lastUpdate(crl->get()));
  STACK_OF(X509_REVOKED)* entries = X509_CRL_get_REVOKED(crl->get());
  for (int i = 0; i < sk_X509_REVOKED_num(entries); ++i) {
    list.serials.push_back(SerialHex(X509_REVOKED_get0_serialNumber(sk_X509_REVOKED_value(entries, i))));
  }
  std::sort(list.serials.begin(), list.serials.end());
  return list;
}

}  // namespace hoist
