// The CA's files: PEM files read with a size cap and written atomically
// with their modes, the CA loaded from its directory and checked, and the
// TLS material of a process (CA, certificate, key) loaded and checked
// together, with errors that name the file and the fix.

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <string>
#include <utility>

#include <openssl/err.h>
#include <openssl/x509.h>

#include "absl/status/status.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "shared/ca.h"
#include "shared/ca_internal.h"

namespace hoist {
namespace ca_internal {
namespace {

std::string FormatUtc(absl::Time t) {
  return absl::FormatTime("%Y-%m-%d %H:%M:%S UTC", t, absl::UTCTimeZone());
}

absl::Status CheckKeyMatches(X509* cert, EVP_PKEY* key, absl::string_view cert_path, absl::string_view key_path) {
  if (X509_check_private_key(cert, key) != 1) {
    ERR_clear_error();
    return absl::InvalidArgumentError(absl::StrCat("the key ", key_path, " does not belong to the certificate ",
                                                   cert_path, ": pass the key issued with it"));
  }
  return absl::OkStatus();
}

}  // namespace

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

}  // namespace ca_internal

using ca_internal::CheckKeyMatches;
using ca_internal::FormatUtc;
using ca_internal::InfoOf;
using ca_internal::ParseCert;
using ca_internal::ParseKey;
using ca_internal::ReadFile;
using ca_internal::VerifyParsed;

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

}  // namespace hoist
