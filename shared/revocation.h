#pragma once

// The fleet's certificate revocation list as a running process sees it:
// read from <CA dir>/crl.pem (hoist ca revoke), checked against the CA, and
// read again whenever the file changes, without a restart. hoistd refuses
// revoked callers and closes their agent sessions; agents refuse a revoked
// controller.

#include <sys/types.h>

#include <functional>
#include <memory>
#include <string>
#include <thread>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "shared/ca.h"

namespace hoist {

// The revocation list next to a CA certificate: <dir of ca_path>/crl.pem.
std::string DefaultCrlPath(absl::string_view ca_path);

class RevocationWatcher {
 public:
  // crl_path need not exist: until it does, nothing is revoked.
  RevocationWatcher(std::string ca_path, std::string crl_path);
  // The watcher of a process's --tls-ca and --tls-crl (empty: DefaultCrlPath),
  // with the list read once: a list that is there but unreadable, not a CRL
  // or another CA's is an error naming the file.
  static absl::StatusOr<std::unique_ptr<RevocationWatcher>> Load(const std::string& ca_path,
                                                                 const std::string& crl_path);
  ~RevocationWatcher();
  RevocationWatcher(const RevocationWatcher&) = delete;
  RevocationWatcher& operator=(const RevocationWatcher&) = delete;

  // Reads the file when it changed since the last call (inode, size or
  // modification time). OK with *changed set; an error (unreadable, not a
  // CRL, another CA's) keeps the list it had and says why.
  absl::Status Refresh(bool* changed = nullptr);

  bool IsRevoked(absl::string_view serial) const;
  size_t revoked_count() const;
  const std::string& crl_path() const { return crl_path_; }

  // Calls Refresh every `every` on a thread of its own, and on_change after a
  // change (also when the file is removed). Stop() or the destructor ends it.
  void Start(absl::Duration every, std::function<void()> on_change);
  void Stop();

 private:
  const std::string ca_path_;
  const std::string crl_path_;
  mutable absl::Mutex mu_;
  RevocationList list_ ABSL_GUARDED_BY(mu_);
  // What the file looked like when last read; ino 0: absent.
  ino_t ino_ ABSL_GUARDED_BY(mu_) = 0;
  off_t size_ ABSL_GUARDED_BY(mu_) = -1;
  int64_t mtime_ns_ ABSL_GUARDED_BY(mu_) = -1;
  bool stop_ ABSL_GUARDED_BY(mu_) = false;
  std::thread thread_;
};

}  // namespace hoist
