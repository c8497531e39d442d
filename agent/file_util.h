#pragma once

// Crash-safe file writes and the few file operations the agent's journal,
// job logs and backups share. Paths are plain strings; every failure names
// the path and the reason (errno text).

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "shared/sha256.h"

namespace hoist::agent {

// Writes data to path so that after a crash the file holds either its old
// content or all of data: a temp file beside it, fsync, rename, fsync of the
// directory. The file gets mode 0600 (journal entries and backups may hold
// secrets).
absl::Status WriteFileAtomic(const std::string& path, absl::string_view data);

// Reads a whole file. NOT_FOUND when it does not exist.
absl::StatusOr<std::string> ReadFileToString(const std::string& path);

// Creates dir and its parents with mode 0700; existing directories are fine.
absl::Status MakeDirs(const std::string& dir);

// fsyncs a directory so that renames and creations inside it are durable.
absl::Status FsyncDir(const std::string& dir);

// Removes a file or a directory tree; absent is fine.
absl::Status RemoveAll(const std::string& path);

// True when path exists (file or directory).
bool PathExists(const std::string& path);

// Names of the entries in dir (no "." or ".."); NOT_FOUND when dir is absent.
absl::StatusOr<std::vector<std::string>> ListDir(const std::string& dir);

// One regular file of a tar archive: a relative name (at most 99 bytes) and
// its bytes, owned by root.
struct TarEntry {
  std::string name;
  std::string content;
  uint32_t mode = 0644;
};

// A ustar archive of entries, as Docker's PUT /archive takes it.
std::string TarArchive(const std::vector<TarEntry>& entries);

// Incremental SHA-256 over OpenSSL's EVP interface.
struct FileDigest {
  uint64_t size_bytes = 0;
  std::string sha256;
};

// Reads the file from disk and hashes it; proves it is readable end to end.
absl::StatusOr<FileDigest> HashFile(const std::string& path);

// Streams chunks into a new file while hashing them; Finish() fsyncs and
// closes. Used for dumps and archives that do not fit in memory.
class HashingFileWriter {
 public:
  // Creates (truncates) path with mode 0600.
  static absl::StatusOr<std::unique_ptr<HashingFileWriter>> Create(const std::string& path);
  ~HashingFileWriter();
  absl::Status Write(absl::string_view chunk);
  // fsyncs and closes; returns what was written.
  absl::StatusOr<FileDigest> Finish();

 private:
  HashingFileWriter(std::string path, int fd) : path_(std::move(path)), fd_(fd) {}
  std::string path_;
  int fd_;
  uint64_t size_ = 0;
  Sha256 hash_;
};

// Copies a file, hashing it on the way; the copy is fsynced. Mode 0600.
absl::StatusOr<FileDigest> CopyFileHashed(const std::string& from, const std::string& to);

}  // namespace hoist::agent
