#include "shared/status_grpc.h"

#include "gtest/gtest.h"

namespace hoist {
namespace {

TEST(StatusGrpcTest, RoundTripsEveryCode) {
  for (int code = 0; code <= 16; ++code) {
    absl::Status s(static_cast<absl::StatusCode>(code), code == 0 ? "" : "field x: bad");
    grpc::Status g = ToGrpcStatus(s);
    EXPECT_EQ(static_cast<int>(g.error_code()), code);
    absl::Status back = FromGrpcStatus(g);
    EXPECT_EQ(back.code(), s.code());
    EXPECT_EQ(back.message(), s.message());
  }
}

TEST(StatusGrpcTest, OutOfRangeCodesBecomeUnknown) {
  absl::Status weird(static_cast<absl::StatusCode>(99), "weird");
  EXPECT_EQ(ToGrpcStatus(weird).error_code(), grpc::StatusCode::UNKNOWN);
  EXPECT_EQ(ToGrpcStatus(weird).error_message(), "weird");
}

}  // namespace
}  // namespace hoist
