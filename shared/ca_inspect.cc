// Reading certificates and keys: OpenSSL's errors as Status, PEM parsed, the
// parts of a certificate Hoist cares about (CertInfo), and verification of a
// certificate against the CA.

#include <arpa/inet.h>

#include <ctime>
#include <string>
#include <vector>

#include <openssl/bn.h>
#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

#include "absl/status/status.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/strip.h"
#include "shared/ca.h"
#include "shared/ca_internal.h"

namespace hoist {
namespace ca_internal {
namespace {

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

}  // namespace

absl::Status OpenSslError(absl::string_view what) {
  return absl::InternalError(absl::StrCat(what, ": ", OpenSslErrors()));
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

absl::Time AbslTimeOf(const ASN1_TIME* t) {
  struct tm tm {};
  if (t == nullptr || ASN1_TIME_to_tm(t, &tm) != 1) return absl::InfinitePast();
  return absl::FromTimeT(timegm(&tm));
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

}  // namespace ca_internal

using ca_internal::InfoOf;
using ca_internal::ParseCert;
using ca_internal::VerifyParsed;

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

}  // namespace hoist
