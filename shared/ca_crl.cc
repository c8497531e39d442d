// The fleet's revocation list: <dir>/crl.pem, an X.509 v2 CRL signed by
// the CA, rewritten whole by CaRevoke and read (its signature checked) by
// ParseRevocationList.

#include <algorithm>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include <openssl/bn.h>
#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/x509.h>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "shared/ca.h"
#include "shared/ca_internal.h"

namespace hoist {

using ca_internal::AbslTimeOf;
using ca_internal::Asn1IntegerPtr;
using ca_internal::Asn1TimePtr;
using ca_internal::BioPtr;
using ca_internal::BnPtr;
using ca_internal::CrlPtr;
using ca_internal::JoinPath;
using ca_internal::LoadCa;
using ca_internal::MemBio;
using ca_internal::OpenSslError;
using ca_internal::ParseCert;
using ca_internal::PathExists;
using ca_internal::ReadFile;
using ca_internal::RevokedPtr;
using ca_internal::SerialHex;
using ca_internal::ToPem;
using ca_internal::WriteFileAtomic;

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

// Which serial CaRevoke revokes: options.serial (checked and normalised),
// or the serial of NAME's current certificate; sets out->serial and
// out->subject.
absl::Status ResolveRevokedSerial(const std::string& dir, absl::string_view name, const CaRevokeOptions& options,
                                  Revoked* out) {
  if (!options.serial.empty()) {
    BnPtr bn;
    BIGNUM* raw = nullptr;
    if (BN_hex2bn(&raw, options.serial.c_str()) != static_cast<int>(options.serial.size())) {
      BN_free(raw);
      return absl::InvalidArgumentError(absl::StrCat("--serial \"", options.serial, "\" is not a hex number"));
    }
    bn.reset(raw);
    char* hex = BN_bn2hex(bn.get());
    out->serial = hex;
    OPENSSL_free(hex);
    out->subject = absl::StrCat("serial ", out->serial);
    return absl::OkStatus();
  }
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
  out->serial = SerialHex(X509_get0_serialNumber(cert->get()));
  out->subject = absl::StrCat(CertKindName(files[0].first), " ", name);
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<Revoked> CaRevoke(absl::string_view dir_view, absl::string_view name, const CaRevokeOptions& options) {
  std::string dir(dir_view.empty() ? "." : dir_view);
  auto ca = LoadCa(dir);
  if (!ca.ok()) return ca.status();
  Revoked out;
  out.crl_path = JoinPath(dir, kCrlFileName);
  if (absl::Status s = ResolveRevokedSerial(dir, name, options, &out); !s.ok()) return s;

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
