#include "shared/revocation.h"

#include <sys/stat.h>

#include <cerrno>
#include <cstring>
#include <fstream>
#include <sstream>

#include "absl/strings/str_cat.h"
#include "spdlog/spdlog.h"

namespace hoist {
namespace {

absl::StatusOr<std::string> Slurp(const std::string& path, absl::string_view what) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return absl::UnavailableError(absl::StrCat("cannot read the ", what, " ", path, ": ", std::strerror(errno)));
  std::ostringstream text;
  text << in.rdbuf();
  return text.str();
}

}  // namespace

std::string DefaultCrlPath(absl::string_view ca_path) {
  size_t slash = ca_path.rfind('/');
  std::string dir = slash == absl::string_view::npos ? "." : std::string(ca_path.substr(0, slash));
  if (dir.empty()) dir = "/";
  return absl::StrCat(dir, dir == "/" ? "" : "/", kCrlFileName);
}

RevocationWatcher::RevocationWatcher(std::string ca_path, std::string crl_path)
    : ca_path_(std::move(ca_path)), crl_path_(std::move(crl_path)) {}

absl::StatusOr<std::unique_ptr<RevocationWatcher>> RevocationWatcher::Load(const std::string& ca_path,
                                                                           const std::string& crl_path) {
  auto watcher = std::make_unique<RevocationWatcher>(ca_path, crl_path.empty() ? DefaultCrlPath(ca_path) : crl_path);
  if (absl::Status s = watcher->Refresh(); !s.ok()) return s;
  return watcher;
}

RevocationWatcher::~RevocationWatcher() { Stop(); }

absl::Status RevocationWatcher::Refresh(bool* changed) {
  if (changed != nullptr) *changed = false;
  struct stat st {};
  const bool exists = stat(crl_path_.c_str(), &st) == 0;
  if (!exists && errno != ENOENT) {
    return absl::UnavailableError(absl::StrCat("cannot stat the revocation list ", crl_path_, ": ", std::strerror(errno)));
  }
  const int64_t mtime_ns = exists ? static_cast<int64_t>(st.st_mtim.tv_sec) * 1000000000 + st.st_mtim.tv_nsec : -1;
  {
    absl::MutexLock lock(&mu_);
    if (!exists && ino_ == 0) return absl::OkStatus();
    if (exists && st.st_ino == ino_ && st.st_size == size_ && mtime_ns == mtime_ns_) return absl::OkStatus();
  }
  RevocationList list;
  if (exists) {
    auto ca = Slurp(ca_path_, "CA certificate");
    if (!ca.ok()) return ca.status();
    auto crl = Slurp(crl_path_, "revocation list");
    if (!crl.ok()) return crl.status();
    auto parsed = ParseRevocationList(*ca, *crl);
    if (!parsed.ok()) {
      return absl::Status(parsed.status().code(), absl::StrCat(crl_path_, ": ", parsed.status().message()));
    }
    list = std::move(*parsed);
  }
  absl::MutexLock lock(&mu_);
  list_ = std::move(list);
  ino_ = exists ? st.st_ino : 0;
  size_ = exists ? st.st_size : -1;
  mtime_ns_ = mtime_ns;
  if (changed != nullptr) *changed = true;
  return absl::OkStatus();
}

bool RevocationWatcher::IsRevoked(absl::string_view serial) const {
  absl::MutexLock lock(&mu_);
  return list_.Contains(serial);
}

size_t RevocationWatcher::revoked_count() const {
  absl::MutexLock lock(&mu_);
  return list_.serials.size();
}

void RevocationWatcher::Start(absl::Duration every, std::function<void()> on_change) {
  thread_ = std::thread([this, every, on_change = std::move(on_change)] {
    std::string last_error;
    for (;;) {
      {
        absl::MutexLock lock(&mu_);
        if (mu_.AwaitWithTimeout(absl::Condition(&stop_), every)) return;
      }
      bool changed = false;
      absl::Status s = Refresh(&changed);
      if (!s.ok()) {
        // Said once per distinct error, not every second.
        if (std::string(s.message()) != last_error) {
          spdlog::error("revocation list not reloaded, the previous one stays in force: {}", std::string(s.message()));
          last_error = std::string(s.message());
        }
        continue;
      }
      last_error.clear();
      if (changed) {
        spdlog::warn("revocation list {} reloaded: {} certificates revoked", crl_path_, revoked_count());
        if (on_change) on_change();
      }
    }
  });
}

void RevocationWatcher::Stop() {
  {
    absl::MutexLock lock(&mu_);
    stop_ = true;
  }
  if (thread_.joinable()) thread_.join();
}

}  // namespace hoist
