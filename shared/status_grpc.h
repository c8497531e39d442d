#pragma once

// The one place where absl::Status meets grpc::Status. Domain code speaks
// absl::Status; service adapters convert at the edge with these.

#include <grpcpp/support/status.h>

#include "absl/status/status.h"

namespace hoist {

// Converts an absl::Status to a grpc::Status with the same code and message.
grpc::Status ToGrpcStatus(const absl::Status& status);

// Converts a grpc::Status to an absl::Status with the same code and message.
absl::Status FromGrpcStatus(const grpc::Status& status);

}  // namespace hoist
