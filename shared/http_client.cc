#include "shared/http_client.h"

#include <curl/curl.h>

#include <memory>
#include <mutex>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"

namespace hoist {
namespace {

struct Sink {
  std::string* body;
  size_t limit;
  bool over = false;
};

size_t Collect(char* data, size_t size, size_t n, void* out) {
  Sink* sink = static_cast<Sink*>(out);
  if (sink->body->size() + size * n > sink->limit) {
    sink->over = true;
    return 0;  // curl stops with a write error
  }
  sink->body->append(data, size * n);
  return size * n;
}

void GlobalInitOnce() {
  static std::once_flag once;
  std::call_once(once, [] { curl_global_init(CURL_GLOBAL_DEFAULT); });
}

}  // namespace

absl::StatusOr<HttpResponse> HttpDo(const HttpRequest& request) {
  GlobalInitOnce();
  std::unique_ptr<CURL, decltype(&curl_easy_cleanup)> curl(curl_easy_init(), curl_easy_cleanup);
  if (!curl) return absl::InternalError("curl_easy_init failed");
  HttpResponse response;
  char errbuf[CURL_ERROR_SIZE] = {0};
  CURL* c = curl.get();
  curl_easy_setopt(c, CURLOPT_URL, request.url.c_str());
  curl_easy_setopt(c, CURLOPT_CUSTOMREQUEST, request.method.c_str());
  curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
  curl_easy_setopt(c, CURLOPT_TIMEOUT_MS, static_cast<long>(absl::ToInt64Milliseconds(request.timeout)));
  curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, Collect);
  Sink sink{&response.body, request.max_body_bytes};
  curl_easy_setopt(c, CURLOPT_WRITEDATA, &sink);
  curl_easy_setopt(c, CURLOPT_ERRORBUFFER, errbuf);
  curl_easy_setopt(c, CURLOPT_NOPROXY, "*");
  if (!request.body.empty() || request.method == "POST" || request.method == "PUT") {
    curl_easy_setopt(c, CURLOPT_POSTFIELDS, request.body.c_str());
    curl_easy_setopt(c, CURLOPT_POSTFIELDSIZE, static_cast<long>(request.body.size()));
  }
  curl_slist* headers = nullptr;
  for (const auto& [k, v] : request.headers) {
    headers = curl_slist_append(headers, absl::StrCat(k, ": ", v).c_str());
  }
  if (headers) curl_easy_setopt(c, CURLOPT_HTTPHEADER, headers);
  CURLcode rc = curl_easy_perform(c);
  if (headers) curl_slist_free_all(headers);
  if (sink.over) {
    return absl::ResourceExhaustedError(absl::StrCat(request.method, " ", request.url, ": the response body exceeds ",
                                                     request.max_body_bytes, " bytes; not read further"));
  }
  if (rc != CURLE_OK) {
    std::string reason = errbuf[0] ? errbuf : curl_easy_strerror(rc);
    std::string msg = absl::StrCat(request.method, " ", request.url, ": ", reason);
    if (rc == CURLE_OPERATION_TIMEDOUT) return absl::DeadlineExceededError(msg);
    return absl::UnavailableError(msg);
  }
  curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &response.status);
  return response;
}

absl::StatusOr<HttpResponse> HttpGet(absl::string_view url, absl::Duration timeout) {
  HttpRequest r;
  r.url = std::string(url);
  r.timeout = timeout;
  return HttpDo(r);
}

}  // namespace hoist
