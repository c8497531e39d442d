#include "agent/file_util.h"

#include <dirent.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <functional>
#include <system_error>

#include "absl/strings/str_cat.h"

namespace hoist::agent {
namespace {

absl::Status ErrnoStatus(absl::string_view what, const std::string& path, int err) {
  std::string message = absl::StrCat(what, " ", path, ": ", std::strerror(err));
  if (err == ENOENT) return absl::NotFoundError(message);
  if (err == EACCES || err == EPERM) return absl::PermissionDeniedError(message);
  return absl::InternalError(message);
}

std::string DirName(const std::string& path) {
  size_t slash = path.rfind('/');
  if (slash == std::string::npos) return ".";
  if (slash == 0) return "/";
  return path.substr(0, slash);
}

absl::Status WriteAll(int fd, absl::string_view data, const std::string& path) {
  while (!data.empty()) {
    ssize_t n = ::write(fd, data.data(), data.size());
    if (n < 0) {
      if (errno == EINTR) continue;
      return ErrnoStatus("cannot write", path, errno);
    }
    data.remove_prefix(static_cast<size_t>(n));
  }
  return absl::OkStatus();
}

// Reads path chunk by chunk into fn; stops at fn's first error.
absl::Status ReadChunks(const std::string& path, const std::function<absl::Status(absl::string_view)>& fn) {
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return ErrnoStatus("cannot open", path, errno);
  char buf[1 << 16];
  absl::Status status;
  for (;;) {
    ssize_t n = ::read(fd, buf, sizeof(buf));
    if (n < 0) {
      if (errno == EINTR) continue;
      status = ErrnoStatus("cannot read", path, errno);
      break;
    }
    if (n == 0) break;
    status = fn(absl::string_view(buf, static_cast<size_t>(n)));
    if (!status.ok()) break;
  }
  ::close(fd);
  return status;
}

}  // namespace

absl::Status FsyncDir(const std::string& dir) {
  int fd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0) return ErrnoStatus("cannot open directory", dir, errno);
  int rc = ::fsync(fd);
  int err = errno;
  ::close(fd);
  if (rc != 0) return ErrnoStatus("cannot fsync directory", dir, err);
  return absl::OkStatus();
}

absl::Status WriteFileAtomic(const std::string& path, absl::string_view data) {
  std::string tmp = absl::StrCat(path, ".tmp-", ::getpid());
  int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
  if (fd < 0) return ErrnoStatus("cannot create", tmp, errno);
  absl::Status s = WriteAll(fd, data, tmp);
  if (s.ok() && ::fsync(fd) != 0) s = ErrnoStatus("cannot fsync", tmp, errno);
  if (::close(fd) != 0 && s.ok()) s = ErrnoStatus("cannot close", tmp, errno);
  if (s.ok() && ::rename(tmp.c_str(), path.c_str()) != 0) s = ErrnoStatus("cannot rename to", path, errno);
  if (!s.ok()) {
    ::unlink(tmp.c_str());
    return s;
  }
  return FsyncDir(DirName(path));
}

absl::StatusOr<std::string> ReadFileToString(const std::string& path) {
  std::string out;
  absl::Status s = ReadChunks(path, [&](absl::string_view chunk) {
    out.append(chunk.data(), chunk.size());
    return absl::OkStatus();
  });
  if (!s.ok()) return s;
  return out;
}

absl::Status MakeDirs(const std::string& dir) {
  std::error_code ec;
  std::filesystem::create_directories(dir, ec);
  if (ec) return absl::InternalError(absl::StrCat("cannot create directory ", dir, ": ", ec.message()));
  return absl::OkStatus();
}

absl::Status RemoveAll(const std::string& path) {
  std::error_code ec;
  std::filesystem::remove_all(path, ec);
  if (ec) return absl::InternalError(absl::StrCat("cannot remove ", path, ": ", ec.message()));
  return absl::OkStatus();
}

bool PathExists(const std::string& path) {
  struct stat st;
  return ::stat(path.c_str(), &st) == 0;
}

absl::StatusOr<std::vector<std::string>> ListDir(const std::string& dir) {
  DIR* d = ::opendir(dir.c_str());
  if (d == nullptr) return ErrnoStatus("cannot list", dir, errno);
  std::vector<std::string> names;
  while (struct dirent* e = ::readdir(d)) {
    std::string name = e->d_name;
    if (name == "." || name == "..") continue;
    names.push_back(std::move(name));
  }
  ::closedir(d);
  return names;
}

absl::StatusOr<FileDigest> HashFile(const std::string& path) {
  Sha256 hash;
  FileDigest digest;
  absl::Status s = ReadChunks(path, [&](absl::string_view chunk) {
    hash.Update(chunk);
    digest.size_bytes += chunk.size();
    return absl::OkStatus();
  });
  if (!s.ok()) return s;
  digest.sha256 = hash.HexDigest();
  return digest;
}

absl::StatusOr<std::unique_ptr<HashingFileWriter>> HashingFileWriter::Create(const std::string& path) {
  int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
  if (fd < 0) return ErrnoStatus("cannot create", path, errno);
  return std::unique_ptr<HashingFileWriter>(new HashingFileWriter(path, fd));
}

HashingFileWriter::~HashingFileWriter() {
  if (fd_ >= 0) ::close(fd_);
}

absl::Status HashingFileWriter::Write(absl::string_view chunk) {
  if (fd_ < 0) return absl::FailedPreconditionError(absl::StrCat(path_, " is already closed"));
  if (absl::Status s = WriteAll(fd_, chunk, path_); !s.ok()) return s;
  hash_.Update(chunk);
  size_ += chunk.size();
  return absl::OkStatus();
}

absl::StatusOr<FileDigest> HashingFileWriter::Finish() {
  if (fd_ < 0) return absl::FailedPreconditionError(absl::StrCat(path_, " is already closed"));
  int fd = fd_;
  fd_ = -1;
  if (::fsync(fd) != 0) {
    int err = errno;
    ::close(fd);
    return ErrnoStatus("cannot fsync", path_, err);
  }
  if (::close(fd) != 0) return ErrnoStatus("cannot close", path_, errno);
  return FileDigest{size_, hash_.HexDigest()};
}

absl::StatusOr<FileDigest> CopyFileHashed(const std::string& from, const std::string& to) {
  if (!PathExists(from)) return absl::NotFoundError(absl::StrCat("cannot open ", from, ": no such file"));
  auto writer = HashingFileWriter::Create(to);
  if (!writer.ok()) return writer.status();
  if (absl::Status s = ReadChunks(from, [&](absl::string_view chunk) { return (*writer)->Write(chunk); }); !s.ok()) {
    return s;
  }
  return (*writer)->Finish();
}

std::string TarArchive(const std::vector<TarEntry>& entries) {
  constexpr size_t kBlock = 512;
  std::string out;
  for (const TarEntry& e : entries) {
    std::string header(kBlock, '\0');
    auto put = [&](size_t offset, size_t width, absl::string_view value) {
      absl::string_view v = value.substr(0, width);
      header.replace(offset, v.size(), v.data(), v.size());
    };
    // Numeric fields: zero-padded octal, NUL-terminated.
    auto octal = [&](size_t offset, size_t width, uint64_t value) {
      char buf[32];
      std::snprintf(buf, sizeof(buf), "%0*llo", static_cast<int>(width - 1), static_cast<unsigned long long>(value));
      put(offset, width - 1, buf);
    };
    put(0, 99, e.name);
    octal(100, 8, e.mode);
    octal(108, 8, 0);
    octal(116, 8, 0);
    octal(124, 12, e.content.size());
    octal(136, 12, 0);
    put(148, 8, "        ");  // the checksum counts its own field as spaces
    header[156] = '0';
    put(257, 6, absl::string_view("ustar\0", 6));
    put(263, 2, "00");
    unsigned checksum = 0;
    for (char c : header) checksum += static_cast<unsigned char>(c);
    char sum[8];
    std::snprintf(sum, sizeof(sum), "%06o", checksum);
    header.replace(148, 7, sum, 7);  // six digits, NUL, then the space kept
    out += header;
    out += e.content;
    out.append((kBlock - e.content.size() % kBlock) % kBlock, '\0');
  }
  out.append(2 * kBlock, '\0');
  return out;
}

}  // namespace hoist::agent
