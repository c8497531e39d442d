#pragma once

// mTLS for Hoist's gRPC connections, on certificates from the fleet CA
// (shared/ca.h). Every connection is mutual: controllers require and verify
// client certificates, and clients verify the controller's certificate and
// its subjectAltName against the address they dial.

#include <memory>
#include <string>

#include <grpcpp/security/auth_context.h>
#include <grpcpp/security/credentials.h>
#include <grpcpp/security/server_credentials.h>
#include <grpcpp/server_context.h>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "shared/ca.h"

namespace hoist {

// Server credentials presenting cert_path/key_path and requiring a client
// certificate that verifies against ca_path
// (GRPC_SSL_REQUEST_AND_REQUIRE_CLIENT_CERTIFICATE_AND_VERIFY). The files are
// checked first (LoadTlsMaterial, role kServer): a missing or unreadable file,
// a key that is not the certificate's, a certificate from another CA, an
// expired one, or one without serverAuth is an error naming the file.
absl::StatusOr<std::shared_ptr<grpc::ServerCredentials>> ServerTlsCredentials(absl::string_view ca_path,
                                                                              absl::string_view cert_path,
                                                                              absl::string_view key_path);
// The same from material already loaded and checked (LoadTlsMaterial, role
// kServer), for a server that also needs the certificate's details.
std::shared_ptr<grpc::ServerCredentials> ServerTlsCredentials(const TlsMaterial& material);

// Channel credentials for agents, operators and controllers dialling a
// controller: trust only ca_path, present cert_path/key_path (checked as
// above, role kClient). gRPC checks the server's subjectAltName against the
// host of the target address.
absl::StatusOr<std::shared_ptr<grpc::ChannelCredentials>> ChannelTlsCredentials(absl::string_view ca_path,
                                                                                absl::string_view cert_path,
                                                                                absl::string_view key_path);

// The peer's verified certificate (the x509_pem_cert property), parsed: its
// name, role (OU=role:...), operator level, serial and validity.
// UNAUTHENTICATED when the peer presented none.
absl::StatusOr<CertInfo> PeerCertificate(const grpc::AuthContext& auth);
absl::StatusOr<CertInfo> PeerCertificate(const grpc::ServerContextBase& context);

}  // namespace hoist
