#include "shared/tls.h"

#include <grpcpp/security/server_credentials.h>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "shared/ca.h"

namespace hoist {

absl::StatusOr<std::shared_ptr<grpc::ServerCredentials>> ServerTlsCredentials(absl::string_view ca_path,
                                                                              absl::string_view cert_path,
                                                                              absl::string_view key_path) {
  auto m = LoadTlsMaterial(ca_path, cert_path, key_path, TlsRole::kServer);
  if (!m.ok()) return m.status();
  std::shared_ptr<grpc::ServerCredentials> creds = ServerTlsCredentials(*m);
  if (creds == nullptr) {
    return absl::InternalError(absl::StrCat("gRPC refused the TLS server credentials from ", cert_path));
  }
  return creds;
}

std::shared_ptr<grpc::ServerCredentials> ServerTlsCredentials(const TlsMaterial& material) {
  grpc::SslServerCredentialsOptions options(GRPC_SSL_REQUEST_AND_REQUIRE_CLIENT_CERTIFICATE_AND_VERIFY);
  options.pem_root_certs = material.ca_pem;
  options.pem_key_cert_pairs.push_back({material.key_pem, material.cert_pem});
  return grpc::SslServerCredentials(options);
}

absl::StatusOr<std::shared_ptr<grpc::ChannelCredentials>> ChannelTlsCredentials(absl::string_view ca_path,
                                                                                absl::string_view cert_path,
                                                                                absl::string_view key_path) {
  auto m = LoadTlsMaterial(ca_path, cert_path, key_path, TlsRole::kClient);
  if (!m.ok()) return m.status();
  grpc::SslCredentialsOptions options;
  options.pem_root_certs = m->ca_pem;
  options.pem_private_key = m->key_pem;
  options.pem_cert_chain = m->cert_pem;
  std::shared_ptr<grpc::ChannelCredentials> creds = grpc::SslCredentials(options);
  if (creds == nullptr) {
    return absl::InternalError(absl::StrCat("gRPC refused the TLS channel credentials from ", cert_path));
  }
  return creds;
}

absl::StatusOr<CertInfo> PeerCertificate(const grpc::AuthContext& auth) {
  if (!auth.IsPeerAuthenticated()) {
    return absl::UnauthenticatedError("the peer presented no verified certificate");
  }
  std::vector<grpc::string_ref> pems = auth.FindPropertyValues("x509_pem_cert");
  if (pems.size() != 1) return absl::UnauthenticatedError("the peer's certificate is not available to check");
  auto info = InspectCertificate(absl::string_view(pems[0].data(), pems[0].size()));
  if (!info.ok()) return absl::UnauthenticatedError(info.status().message());
  return info;
}

absl::StatusOr<CertInfo> PeerCertificate(const grpc::ServerContextBase& context) {
  std::shared_ptr<const grpc::AuthContext> auth = context.auth_context();
  if (auth == nullptr) return absl::UnauthenticatedError("the call has no authentication context (plaintext?)");
  return PeerCertificate(*auth);
}

}  // namespace hoist
