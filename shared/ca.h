#pragma once

// The fleet CA behind Hoist's mTLS: one ECDSA P-256 certificate authority per
// fleet, kept in a directory, that issues the certificates controllers,
// agents and operators present to each other. Pure libcrypto; the gRPC side
// (credentials, peer identity) is in shared/tls.h.
//
// A CA directory holds:
//   ca.key, ca.crt                  the CA (key mode 0600)
//   <kind>-<name>.key, .crt         issued identities, e.g. agent-host-17.crt

#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"

namespace hoist {

// What a certificate is for; decides its extended key usage and default SANs.
enum class CertKind {
  kController,  // serverAuth + clientAuth (controllers may call each other)
  kAgent,       // clientAuth
  kOperator,    // clientAuth
};

// "controller", "agent" or "operator".
absl::string_view CertKindName(CertKind kind);

// What an operator certificate may do (README, "Who may do what"). Each level
// includes the ones below it. kNone: not an operator certificate.
enum class OperatorLevel {
  kNone = 0,
  kViewer = 1,    // read everything but secrets
  kDeployer = 2,  // plan, upgrade, roll back without a restore, cancel, cut over
  kAdmin = 3,     // apply stacks, restore backups
};
// "viewer", "deployer", "admin" ("none" for kNone).
absl::string_view OperatorLevelName(OperatorLevel level);
// Parses "viewer", "deployer" or "admin"; INVALID_ARGUMENT naming them otherwise.
absl::StatusOr<OperatorLevel> ParseOperatorLevel(absl::string_view text);
// Parses "controller", "agent" or "operator"; INVALID_ARGUMENT otherwise.
absl::StatusOr<CertKind> ParseCertKind(absl::string_view text);

// The CA's subject common name.
inline constexpr absl::string_view kFleetCaCommonName = "Hoist fleet CA";
// How long the CA and issued certificates are valid by default.
inline constexpr absl::Duration kDefaultCaValidity = absl::Hours(24 * 3652);
inline constexpr absl::Duration kDefaultCertValidity = absl::Hours(24 * 365);
// hoistd warns (/health, its log) about a certificate that expires sooner.
inline constexpr absl::Duration kCertificateExpiryWarning = absl::Hours(24 * 30);

// Paths of a key and its certificate.
struct KeyAndCert {
  std::string key_path;
  std::string cert_path;
};

struct CaInitOptions {
  absl::Duration validity = kDefaultCaValidity;
  // Replace an existing CA. Every certificate it issued stops verifying.
  bool force = false;
};

// Creates `dir` (mode 0700) if missing and writes a new CA key (0600) and
// self-signed certificate there: CN "Hoist fleet CA", basicConstraints
// CA:TRUE (critical), keyUsage keyCertSign + cRLSign. ALREADY_EXISTS when
// dir holds a CA (ca.key or ca.crt) and options.force is false.
absl::StatusOr<KeyAndCert> CaInit(absl::string_view dir, const CaInitOptions& options = {});

struct CaIssueOptions {
  // Extra subjectAltNames: host names or IP addresses, optionally prefixed
  // "DNS:" or "IP:". Controllers always get DNS:localhost, IP:127.0.0.1 and
  // DNS:<name>; agents and operators get DNS:<name>.
  std::vector<std::string> sans;
  absl::Duration validity = kDefaultCertValidity;
  // Start of validity; default five minutes ago (tolerates clock skew).
  // not_after = not_before + validity. Tests pass a past time to get an
  // expired certificate.
  std::optional<absl::Time> not_before;
  // Replace an existing <kind>-<name> key and certificate.
  bool force = false;
  // Required for operator certificates, refused for the others.
  OperatorLevel level = OperatorLevel::kNone;
};

// What CaIssue wrote.
struct IssuedCert {
  KeyAndCert files;
  std::vector<std::string> sans;  // as written, "DNS:..." / "IP:..."
  absl::Time not_after;
};

// Issues a fresh P-256 key and a certificate with CN = `name`, signed by the
// CA in `dir`, and writes <dir>/<kind>-<name>.key (0600) and .crt. The role
// is in the subject as OU=role:<kind>, and an operator's level as
// OU=level:<level>: signed by the CA like the rest, so hoistd trusts them
// as it trusts the name.
// INVALID_ARGUMENT for a bad name or SAN, FAILED_PRECONDITION when dir has no
// CA, ALREADY_EXISTS when the files exist and options.force is false.
absl::StatusOr<IssuedCert> CaIssue(absl::string_view dir, CertKind kind, absl::string_view name,
                                   const CaIssueOptions& options = {});

// Checks an identity name (agent id, controller or operator name): 1 to 64
// characters of letters, digits, '-' and '.', starting and ending with a
// letter or digit, no empty dot-separated part. INVALID_ARGUMENT naming the
// problem otherwise.
absl::Status ValidateCertName(absl::string_view name);

// The parts of a certificate Hoist cares about.
struct CertInfo {
  std::string common_name;
  std::string issuer_common_name;
  std::vector<std::string> dns_names;
  std::vector<std::string> ip_addresses;
  bool is_ca = false;
  // From extendedKeyUsage; both true when the extension is absent.
  bool server_auth = false;
  bool client_auth = false;
  absl::Time not_before;
  absl::Time not_after;
  // From OU=role:<kind>; unset for a certificate without one (issued before
  // roles existed, or by another tool): hoistd refuses those.
  std::optional<CertKind> kind;
  // From OU=level:<level> on operator certificates.
  OperatorLevel level = OperatorLevel::kNone;
  // Serial number, upper-case hex without leading zeros (as in the CRL).
  std::string serial;
};

// Parses one PEM certificate. INVALID_ARGUMENT when it is not one.
absl::StatusOr<CertInfo> InspectCertificate(absl::string_view cert_pem);

// Checks that the certificate chains to the CA certificate (X509_verify_cert)
// and is valid at `at`. UNAUTHENTICATED with OpenSSL's reason otherwise.
absl::Status VerifyCertificate(absl::string_view ca_pem, absl::string_view cert_pem, absl::Time at);

// The revocation list of a CA directory: <dir>/crl.pem.
inline constexpr absl::string_view kCrlFileName = "crl.pem";

struct CaRevokeOptions {
  // Limits NAME to one kind when several kinds share the name.
  std::optional<CertKind> kind;
  // Revoke this serial (hex) instead of a NAME's current certificate: for a
  // certificate replaced since (--force) or whose file is gone.
  std::string serial;
};

struct Revoked {
  std::string crl_path;
  std::string serial;       // the serial revoked (hex)
  std::string subject;      // "agent host-17", or "serial ..." when revoked by serial
  size_t total_revoked = 0;  // entries in the list now
  bool already = false;      // it was on the list before
};

// Adds the certificate <dir>/<kind>-<name>.crt (or options.serial) to the
// CA's revocation list and rewrites <dir>/crl.pem, an X.509 v2 CRL signed by
// the CA. hoistd and the agents read that file again when it changes.
// NOT_FOUND when no certificate has that name, INVALID_ARGUMENT when several
// kinds have it and options.kind is unset.
absl::StatusOr<Revoked> CaRevoke(absl::string_view dir, absl::string_view name, const CaRevokeOptions& options = {});

// The serials of a CRL, after checking that the CA signed it.
struct RevocationList {
  std::vector<std::string> serials;  // hex, sorted
  absl::Time last_update;
  bool Contains(absl::string_view serial) const;
};

// Parses a PEM CRL and checks its signature against the CA certificate.
// INVALID_ARGUMENT when it is not a CRL, UNAUTHENTICATED when another CA
// signed it.
absl::StatusOr<RevocationList> ParseRevocationList(absl::string_view ca_pem, absl::string_view crl_pem);

// Which side of a TLS connection an identity is for.
enum class TlsRole { kServer, kClient };

// A CA, a certificate and its key, read and checked, ready for gRPC.
struct TlsMaterial {
  std::string ca_pem;
  std::string cert_pem;
  std::string key_pem;
  CertInfo cert;
};

// Reads the three files and checks that they are usable together: each
// exists and parses, the key matches the certificate, the certificate was
// issued by the CA, is valid at `now`, and has the extended key usage `role`
// needs. Errors name the file and the fix.
absl::StatusOr<TlsMaterial> LoadTlsMaterial(absl::string_view ca_path, absl::string_view cert_path,
                                            absl::string_view key_path, TlsRole role,
                                            absl::Time now = absl::Now());

}  // namespace hoist
