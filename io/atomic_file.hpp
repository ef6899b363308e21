#pragma once
// Every file lowrank writes itself (models, adapters, checkpoints, tokenizer files, JSON and CSV reports)
// goes through write_file_atomically; the one file another program writes, the demo's loss plot
// (gnuplot), is written under a temporary name and renamed (tools/report.cpp). The bytes go to a
// temporary file next to the target, are flushed to the disk (fsync), and the temporary is renamed
// over the target, then the directory is flushed so that the rename itself survives a crash. A reader (or
// a crash at any moment) therefore sees either the complete old file or the complete new one, never a
// half-written file at `path`.
#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <functional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

namespace lowrank {

// The open temporary file handed to a writer callback. Writes are buffered; any failure (disk full, I/O
// error) throws lowrank::Error naming the target path.
class AtomicFileWriter {
 public:
  AtomicFileWriter(const AtomicFileWriter&) = delete;
  AtomicFileWriter& operator=(const AtomicFileWriter&) = delete;

  void write(const void* data, std::size_t size);
  void write(std::string_view text) { write(text.data(), text.size()); }
  void write(std::span<const std::byte> bytes) { write(bytes.data(), bytes.size()); }
  // Bytes written so far.
  std::uint64_t size() const { return written_; }
  const std::filesystem::path& target() const { return target_; }

 private:
  friend void write_file_atomically(const std::filesystem::path&, const std::function<void(AtomicFileWriter&)>&);
  AtomicFileWriter(int fd, std::filesystem::path target) : fd_(fd), target_(std::move(target)) {}
  void flush_buffer();

  int fd_;
  std::filesystem::path target_;
  std::vector<char> buffer_;
  std::uint64_t written_ = 0;
};

// Writes `path` atomically with the content produced by `writer`. The temporary is
// `<path>.tmp-<pid>-<n>` (n counts the calls in this process, so two threads never share one). When
// `writer` throws, the temporary is removed, `path` is left as it was, and the exception propagates.
// A process killed mid-write leaves its temporary behind; the next write of the same path removes every
// `<path>.tmp-<pid>-<n>` whose process no longer exists (pids are those of this machine's pid namespace).
void write_file_atomically(const std::filesystem::path& path, const std::function<void(AtomicFileWriter&)>& writer);
void write_file_atomically(const std::filesystem::path& path, std::span<const std::byte> bytes);
void write_file_atomically(const std::filesystem::path& path, std::string_view text);

}  // namespace lowrank
