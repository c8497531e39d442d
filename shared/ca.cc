// The CA's own work: kinds, levels and names; subjectAltNames; certificates
// built and signed (CaInit, CaIssue). Reading certificates, the files and
// the revocation list live beside it (see ca_internal.h).

#include "shared/ca.h"

#include <arpa/inet.h>
#include <sys/stat.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <utility>

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
#include "shared/ca_internal.h"

namespace hoist {

using ca_internal::BnPtr;
using ca_internal::ExtPtr;
using ca_internal::JoinPath;
using ca_internal::kLevelPrefix;
using ca_internal::kRolePrefix;
using ca_internal::LoadCa;
using ca_internal::OpenSslError;
using ca_internal::PathExists;
using ca_internal::PkeyPtr;
using ca_internal::ToPem;
using ca_internal::WriteFileAtomic;
using ca_internal::X509Ptr;

namespace {

constexpr absl::Duration kClockSkew = absl::Minutes(5);

absl::StatusOr<std::string> PemOfKey(EVP_PKEY* key) {
  return ToPem("a private key", [key](BIO* b) {
    return PEM_write_bio_PrivateKey(b, key, nullptr, nullptr, 0, nullptr, nullptr);
  });
}

absl::StatusOr<std::string> PemOfCert(X509* cert) {
  return ToPem("a certificate", [cert](BIO* b) { return PEM_write_bio_X509(b, cert); });
}

absl::StatusOr<PkeyPtr> NewP256Key() {
  PkeyPtr key(EVP_EC_gen("P-256"));
  if (!key) return OpenSslError("generating a P-256 key");
  return key;
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

}  // namespace hoist
