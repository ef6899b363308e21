#include "lowrank/io/atomic_file.hpp"

#include <fcntl.h>
#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstring>
#include <string_view>
#include <system_error>

#include "lowrank/core/error.hpp"

namespace lowrank {

namespace {

// Large enough that a multi-gigabyte checkpoint costs few system calls, small enough to be negligible.
constexpr std::size_t write_buffer_bytes = std::size_t{1} << 20;


void write_all(int fd, const char* data, std::size_t size, const std::filesystem::path& target) {
  while (size > 0) {
    const ssize_t n = ::write(fd, data, size);
    if (n < 0) {
      const int error = errno;
      if (error == EINTR) continue;
      fail("{}: writing failed: {}", target.string(), errno_text(error));
    }
    data += n;
    size -= static_cast<std::size_t>(n);
  }
}

enum class SyncTarget { file, directory };

void fsync_or_fail(int fd, SyncTarget kind, const std::filesystem::path& what, const std::filesystem::path& target) {
  while (::fsync(fd) != 0) {
    const int error = errno;
    if (error == EINTR) continue;
    // Some file systems cannot sync a directory; by then the file's own data is on disk.
    if (kind == SyncTarget::directory && (error == EINVAL || error == EROFS)) return;
    fail("{}: fsync of {} failed: {}", target.string(), what.string(), errno_text(error));
  }
}

std::filesystem::path temporary_name(const std::filesystem::path& path) {
  static std::atomic<std::uint64_t> counter{0};
  std::filesystem::path temp = path;
  temp += ".tmp-" + std::to_string(::getpid()) + "-" + std::to_string(counter.fetch_add(1));
  return temp;
}

// A writer killed mid-save (SIGKILL, OOM killer, power loss) cannot remove its temporary. The name
// carries the writer's pid, so the next save of the same path removes those whose process is gone.
// Best effort: a directory that cannot be listed or a file that cannot be removed does not stop a save.
void remove_orphaned_temporaries(const std::filesystem::path& path) {
  std::filesystem::path directory = path.parent_path();
  if (directory.empty()) directory = ".";
  const std::string prefix = path.filename().string() + ".tmp-";
  std::error_code error;
  for (std::filesystem::directory_iterator it(directory, error), end; !error && it != end; it.increment(error)) {
    const std::string name = it->path().filename().string();
    if (!name.starts_with(prefix)) continue;
    // <prefix><pid>-<n>, both decimal
    const std::string_view rest = std::string_view(name).substr(prefix.size());
    const std::size_t dash = rest.find('-');
    if (dash == 0 || dash == std::string_view::npos || dash + 1 == rest.size() || dash > 9) continue;
    if (rest.find_first_not_of("0123456789-") != std::string_view::npos || rest.find('-', dash + 1) != std::string_view::npos)
      continue;
    pid_t writer = 0;
    for (const char digit : rest.substr(0, dash)) writer = writer * 10 + (digit - '0');
    if (writer <= 0) continue;  // kill(0, ...) would ask about our own process group
    if (::kill(writer, 0) == 0 || errno != ESRCH) continue;  // alive, or not ours to judge (EPERM)
    ::unlink(it->path().c_str());
  }
}

// Closes the file and removes the temporary unless the rename happened.
struct TemporaryFile {
  int fd = -1;
  std::filesystem::path path;
  bool renamed = false;
  ~TemporaryFile() {
    if (fd >= 0) ::close(fd);
    if (!renamed) ::unlink(path.c_str());
  }
};

}  // namespace

void AtomicFileWriter::write(const void* data, std::size_t size) {
  const char* bytes = static_cast<const char*>(data);
  written_ += size;
  if (buffer_.size() + size <= write_buffer_bytes) {
    buffer_.insert(buffer_.end(), bytes, bytes + size);
    return;
  }
  flush_buffer();
  if (size >= write_buffer_bytes) {
    write_all(fd_, bytes, size, target_);  // large blocks skip the copy into the buffer
  } else {
    buffer_.assign(bytes, bytes + size);
  }
}

void AtomicFileWriter::flush_buffer() {
  write_all(fd_, buffer_.data(), buffer_.size(), target_);
  buffer_.clear();
}

void write_file_atomically(const std::filesystem::path& path, const std::function<void(AtomicFileWriter&)>& writer) {
  if (path.empty()) fail("write_file_atomically: empty path");
  remove_orphaned_temporaries(path);
  TemporaryFile temp;
  temp.path = temporary_name(path);
  temp.fd = ::open(temp.path.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0666);
  if (temp.fd < 0) {
    const int error = errno;
    temp.renamed = true;  // nothing was created, so nothing to remove
    fail("{}: cannot create the temporary file {}: {}", path.string(), temp.path.string(), errno_text(error));
  }

  AtomicFileWriter out(temp.fd, path);
  out.buffer_.reserve(write_buffer_bytes);
  writer(out);
  out.flush_buffer();
  fsync_or_fail(temp.fd, SyncTarget::file, temp.path, path);
  const int fd = temp.fd;
  temp.fd = -1;
  if (::close(fd) != 0) {
    const int error = errno;
    fail("{}: closing {} failed: {}", path.string(), temp.path.string(), errno_text(error));
  }

  if (::rename(temp.path.c_str(), path.c_str()) != 0) {
    const int error = errno;
    fail("{}: renaming {} over it failed: {}", path.string(), temp.path.string(), errno_text(error));
  }
  temp.renamed = true;

  // The rename is a change to the directory: without this fsync a crash could lose it.
  std::filesystem::path directory = path.parent_path();
  if (directory.empty()) directory = ".";
  const int dir_fd = ::open(directory.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (dir_fd < 0) {
    const int error = errno;
    fail("{}: cannot open its directory {} to sync it: {}", path.string(), directory.string(), errno_text(error));
  }
  try {
    fsync_or_fail(dir_fd, SyncTarget::directory, directory, path);
  } catch (...) {
    ::close(dir_fd);
    throw;
  }
  ::close(dir_fd);
}

void write_file_atomically(const std::filesystem::path& path, std::span<const std::byte> bytes) {
  write_file_atomically(path, [&](AtomicFileWriter& out) { out.write(bytes); });
}

void write_file_atomically(const std::filesystem::path& path, std::string_view text) {
  write_file_atomically(path, [&](AtomicFileWriter& out) { out.write(text); });
}

}  // namespace lowrank
