#pragma once

// Internals of the fleet CA shared by its files (not for use outside
// shared/ca*.cc):
//   ca.cc          kinds and levels, names and SANs; building and signing
//                  certificates: CaInit, CaIssue
//   ca_inspect.cc  reading certificates and keys: PEM parsing, the parts of
//                  a certificate Hoist cares about, verification
//   ca_files.cc    the files: PEM files read with a size cap and written
//                  atomically with their modes, the CA loaded from its
//                  directory, TLS material loaded and checked
//   ca_crl.cc      the revocation list: CaRevoke, ParseRevocationList

#include <sys/types.h>

#include <memory>
#include <string>
#include <vector>

#include <openssl/bio.h>
#include <openssl/bn.h>
#include <openssl/evp.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"
#include "shared/ca.h"

namespace hoist::ca_internal {

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

// The subject units that carry a certificate's role and an operator's level:
// OU=role:<kind>, OU=level:<level>.
inline constexpr absl::string_view kRolePrefix = "role:";
inline constexpr absl::string_view kLevelPrefix = "level:";

// An INTERNAL error: `what` failed, with OpenSSL's queued reasons.
absl::Status OpenSslError(absl::string_view what);

// ---- files (ca_files.cc) ----

std::string JoinPath(absl::string_view dir, absl::string_view file);
bool PathExists(const std::string& path);
// Reads a PEM file (at most 1 MiB); NOT_FOUND or PERMISSION_DENIED naming
// the file and `what` it should hold.
absl::StatusOr<std::string> ReadFile(absl::string_view path, absl::string_view what);
// Writes `data` to `path` with `mode` atomically: a temporary file in the same
// directory, then link() (fails if path exists) or rename() when overwriting.
absl::Status WriteFileAtomic(const std::string& path, absl::string_view data, mode_t mode, bool overwrite);

// The CA of a directory, read and checked (a CA certificate, its key, not
// expired); FAILED_PRECONDITION saying how to make one when there is none.
struct LoadedCa {
  X509Ptr cert;
  PkeyPtr key;
};
absl::StatusOr<LoadedCa> LoadCa(absl::string_view dir);

// ---- certificates and keys (ca_inspect.cc) ----

// Runs `write` on a memory BIO and returns what it wrote.
template <typename WriteFn>
absl::StatusOr<std::string> ToPem(absl::string_view what, WriteFn write) {
  BioPtr bio(BIO_new(BIO_s_mem()));
  if (!bio || write(bio.get()) != 1) return OpenSslError(absl::StrCat("encoding ", what));
  char* data = nullptr;
  long len = BIO_get_mem_data(bio.get(), &data);
  return std::string(data, static_cast<size_t>(len));
}

BioPtr MemBio(absl::string_view pem);
// INVALID_ARGUMENT naming `where` when pem holds no certificate (key).
absl::StatusOr<X509Ptr> ParseCert(absl::string_view pem, absl::string_view where);
absl::StatusOr<PkeyPtr> ParseKey(absl::string_view pem, absl::string_view where);
// UNAUTHENTICATED with OpenSSL's reason unless cert chains to ca at `at`.
absl::Status VerifyParsed(X509* ca, X509* cert, absl::Time at);

absl::Time AbslTimeOf(const ASN1_TIME* t);
// Upper-case hex without leading zeros, as in the CRL; "" when unreadable.
std::string SerialHex(const ASN1_INTEGER* serial);
CertInfo InfoOf(X509* cert);

}  // namespace hoist::ca_internal
