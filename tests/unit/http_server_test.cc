#include "shared/http_server.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

#include <string>

#include "absl/time/clock.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "shared/http_client.h"

namespace hoist {
namespace {

using ::testing::HasSubstr;
using ::testing::StartsWith;

// Sends raw bytes to 127.0.0.1:port and returns everything the server
// answers until it closes the connection (5 s receive timeout).
std::string RawExchange(uint16_t port, const std::string& request) {
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  if (fd < 0) return "socket failed";
  timeval tv{5, 0};
  setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(port);
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0) {
    close(fd);
    return "connect failed";
  }
  size_t off = 0;
  while (off < request.size()) {
    ssize_t n = send(fd, request.data() + off, request.size() - off, MSG_NOSIGNAL);
    if (n <= 0) break;
    off += static_cast<size_t>(n);
  }
  std::string reply;
  char buf[4096];
  for (;;) {
    ssize_t n = recv(fd, buf, sizeof(buf), 0);
    if (n <= 0) break;
    reply.append(buf, static_cast<size_t>(n));
  }
  close(fd);
  return reply;
}

class HttpServerTest : public ::testing::Test {
 protected:
  void SetUp() override {
    server_.Handle("/health", [this](const HttpServerRequest& req) {
      last_query_ = req.query;
      return HttpServerReply{200, "text/plain; charset=utf-8", "ok\n"};
    });
    server_.Handle("/metrics", [](const HttpServerRequest&) {
      return HttpServerReply{200, "text/plain; version=0.0.4", "hoist_up 1\n"};
    });
    ASSERT_TRUE(server_.Start("127.0.0.1", 0).ok());
    ASSERT_NE(server_.port(), 0);
    base_ = "http://127.0.0.1:" + std::to_string(server_.port());
  }

  HttpServer server_;
  std::string base_;
  std::string last_query_;  // written on the server thread, read after the reply
};

TEST_F(HttpServerTest, ServesRegisteredPathsWithTheirBody) {
  auto r = HttpGet(base_ + "/health");
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->status, 200);
  EXPECT_EQ(r->body, "ok\n");
  auto m = HttpGet(base_ + "/metrics");
  ASSERT_TRUE(m.ok()) << m.status();
  EXPECT_EQ(m->body, "hoist_up 1\n");
}

// An idle server waits in poll without a timeout; it must not spin. A busy
// accept loop burns the whole second below; an idle one a few milliseconds.
TEST_F(HttpServerTest, IdleServerUsesNoCpu) {
  auto cpu = [] {
    rusage u{};
    getrusage(RUSAGE_SELF, &u);
    return absl::DurationFromTimeval(u.ru_utime) + absl::DurationFromTimeval(u.ru_stime);
  };
  const absl::Duration before = cpu();
  absl::SleepFor(absl::Seconds(1));
  const absl::Duration used = cpu() - before;
  EXPECT_LT(used, absl::Milliseconds(200)) << "the idle server used " << absl::FormatDuration(used)
                                           << " of CPU in one second";
}

TEST_F(HttpServerTest, QueryIsSplitFromThePath) {
  auto r = HttpGet(base_ + "/health?verbose=1");
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->status, 200);
  EXPECT_EQ(last_query_, "verbose=1");
}

TEST_F(HttpServerTest, UnknownPathIs404) {
  auto r = HttpGet(base_ + "/nope");
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->status, 404);
  auto prefix = HttpGet(base_ + "/health/extra");
  ASSERT_TRUE(prefix.ok()) << prefix.status();
  EXPECT_EQ(prefix->status, 404) << "paths match exactly, not by prefix";
}

TEST_F(HttpServerTest, OtherMethodsAre405) {
  auto r = HttpDo({.method = "POST", .url = base_ + "/health", .body = "x"});
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->status, 405);
  std::string raw = RawExchange(server_.port(), "DELETE /health HTTP/1.1\r\nHost: x\r\n\r\n");
  EXPECT_THAT(raw, StartsWith("HTTP/1.1 405 Method Not Allowed\r\n"));
  EXPECT_THAT(raw, HasSubstr("Allow: GET, HEAD\r\n"));
}

TEST_F(HttpServerTest, RepliesCloseTheConnectionAndCarryTheContentType) {
  std::string raw = RawExchange(server_.port(), "GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n");
  EXPECT_THAT(raw, StartsWith("HTTP/1.1 200 OK\r\n"));
  EXPECT_THAT(raw, HasSubstr("Content-Type: text/plain; version=0.0.4\r\n"));
  EXPECT_THAT(raw, HasSubstr("Content-Length: 11\r\n"));
  EXPECT_THAT(raw, HasSubstr("Connection: close\r\n"));
  EXPECT_THAT(raw, testing::EndsWith("\r\n\r\nhoist_up 1\n"));
}

TEST_F(HttpServerTest, HeadHasNoBody) {
  std::string raw = RawExchange(server_.port(), "HEAD /health HTTP/1.1\r\nHost: x\r\n\r\n");
  EXPECT_THAT(raw, StartsWith("HTTP/1.1 200 OK\r\n"));
  EXPECT_THAT(raw, HasSubstr("Content-Length: 3\r\n"));
  EXPECT_THAT(raw, testing::EndsWith("\r\n\r\n"));
}

TEST_F(HttpServerTest, GarbageGets400AndTheServerKeepsServing) {
  for (const char* junk : {"GARBAGE\r\n\r\n", "GET\r\n\r\n", "GET health HTTP/1.1\r\n\r\n",
                           "GET /health HTTP/1.1\r\nno colon here\r\n\r\n", "\x01\x02\x03 / HTTP/1.1\r\n\r\n"}) {
    std::string raw = RawExchange(server_.port(), junk);
    EXPECT_THAT(raw, StartsWith("HTTP/1.1 400 Bad Request\r\n")) << "for " << testing::PrintToString(junk);
  }
  auto r = HttpGet(base_ + "/health");
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->status, 200);
}

TEST_F(HttpServerTest, OversizedRequestsAreRefused) {
  std::string long_line = "GET /" + std::string(8000, 'a') + " HTTP/1.1\r\n\r\n";
  EXPECT_THAT(RawExchange(server_.port(), long_line), StartsWith("HTTP/1.1 414 "));
  std::string big_headers = "GET /health HTTP/1.1\r\n";
  for (int i = 0; i < 400; ++i) big_headers += "X-Filler-" + std::to_string(i) + ": " + std::string(60, 'v') + "\r\n";
  big_headers += "\r\n";
  EXPECT_THAT(RawExchange(server_.port(), big_headers), StartsWith("HTTP/1.1 431 "));
  auto r = HttpGet(base_ + "/health");
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->status, 200);
}

TEST_F(HttpServerTest, UnsupportedVersionIs505) {
  EXPECT_THAT(RawExchange(server_.port(), "GET /health HTTP/2.0\r\n\r\n"), StartsWith("HTTP/1.1 505 "));
}

TEST_F(HttpServerTest, ThrowingHandlerIs500) {
  server_.Handle("/boom", [](const HttpServerRequest&) -> HttpServerReply { throw std::runtime_error("boom"); });
  auto r = HttpGet(base_ + "/boom");
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->status, 500);
}

// The client reads at most max_body_bytes (1 MiB for GET, so for health
// probes) and says so rather than holding a body of any size.
TEST_F(HttpServerTest, ClientRefusesABodyOverItsLimit) {
  server_.Handle("/big", [](const HttpServerRequest&) {
    return HttpServerReply{200, "text/plain", std::string(3 << 20, 'x')};
  });
  auto r = HttpGet(base_ + "/big");
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), absl::StatusCode::kResourceExhausted) << r.status();
  EXPECT_THAT(std::string(r.status().message()), HasSubstr("exceeds 1048576 bytes"));
  HttpRequest big;
  big.url = base_ + "/big";
  big.max_body_bytes = 4 << 20;
  auto whole = HttpDo(big);
  ASSERT_TRUE(whole.ok()) << whole.status();
  EXPECT_EQ(whole->body.size(), 3u << 20);
}

TEST_F(HttpServerTest, StopClosesThePortAndIsIdempotent) {
  server_.Stop();
  auto r = HttpGet(base_ + "/health", absl::Seconds(2));
  EXPECT_FALSE(r.ok()) << "still served after Stop()";
  server_.Stop();
}

TEST(HttpServerStartTest, SlowClientTimesOutWith408) {
  HttpServer server({.read_timeout = absl::Milliseconds(200)});
  ASSERT_TRUE(server.Start("127.0.0.1:0").ok());
  // An unfinished request: the server must answer 408 rather than wait forever.
  EXPECT_THAT(RawExchange(server.port(), "GET /health HTTP/1.1\r\n"), StartsWith("HTTP/1.1 408 "));
}

TEST(HttpServerStartTest, BadAddressesAreRefused) {
  HttpServer server;
  EXPECT_EQ(server.Start("no-port").code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(server.Start("127.0.0.1:99999").code(), absl::StatusCode::kInvalidArgument);
  HttpServer first;
  ASSERT_TRUE(first.Start("127.0.0.1", 0).ok());
  HttpServer second;
  absl::Status taken = second.Start("127.0.0.1", first.port());
  EXPECT_EQ(taken.code(), absl::StatusCode::kUnavailable) << taken;
  EXPECT_EQ(first.Start("127.0.0.1", 0).code(), absl::StatusCode::kFailedPrecondition);
}

TEST(SplitHostPortTest, Forms) {
  auto v4 = SplitHostPort("127.0.0.1:9464");
  ASSERT_TRUE(v4.ok());
  EXPECT_EQ(v4->first, "127.0.0.1");
  EXPECT_EQ(v4->second, 9464);
  auto v6 = SplitHostPort("[::1]:0");
  ASSERT_TRUE(v6.ok());
  EXPECT_EQ(v6->first, "::1");
  EXPECT_EQ(v6->second, 0);
  EXPECT_FALSE(SplitHostPort("::1:80").ok());
  EXPECT_FALSE(SplitHostPort(":80").ok());
}

}  // namespace
}  // namespace hoist
