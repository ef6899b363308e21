#pragma once
// Progress of a long loop on stderr: on a terminal one line redrawn in place with `\r` (bar, count,
// rate, ETA and a caller's note such as the current loss); into a pipe or file, where `\r` would pile up
// as garbage, one plain line each time another tenth of the work is done, so that logs stay readable.
#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <string>
#include <string_view>
#include <utility>

#include <fmt/format.h>
#include <unistd.h>

namespace lowrank::tools {

class Progress {
 public:
  using Clock = std::chrono::steady_clock;

  // `unit` names what is counted ("steps", "prompts"), for the rate.
  Progress(std::string label, std::int64_t total, std::string unit, std::FILE* out = stderr)
      : label_(std::move(label)), unit_(std::move(unit)), total_(std::max<std::int64_t>(total, 1)), out_(out),
        interactive_(::isatty(::fileno(out)) == 1), start_(Clock::now()), last_draw_(start_) {}
  Progress(const Progress&) = delete;
  Progress& operator=(const Progress&) = delete;
  ~Progress() {
    if (!finished_) finish();
  }

  // `done` items of `total` are complete. Cheap to call every iteration: redraws are rate-limited.
  void update(std::int64_t done, std::string_view note = {}) {
    done_ = std::clamp<std::int64_t>(done, 0, total_);
    note_ = note;
    const auto now = Clock::now();
    if (interactive_) {
      if (now - last_draw_ < std::chrono::milliseconds(100) && done_ < total_) return;
      last_draw_ = now;
      fmt::print(out_, "\r{}\x1b[K", line(now));
      std::fflush(out_);
    } else {
      const std::int64_t tenth = done_ * 10 / total_;
      if (tenth <= last_tenth_) return;
      last_tenth_ = tenth;
      fmt::print(out_, "{}\n", line(now));
      std::fflush(out_);
    }
  }

  // Final line (always printed), ending the in-place line on a terminal.
  void finish(std::string_view note = {}) {
    if (finished_) return;
    finished_ = true;
    if (!note.empty()) note_ = note;
    const auto now = Clock::now();
    if (interactive_) {
      fmt::print(out_, "\r{}\x1b[K\n", line(now));
    } else if (done_ * 10 / total_ != last_tenth_ || !note.empty()) {
      fmt::print(out_, "{}\n", line(now));
    }
    std::fflush(out_);
  }

  double elapsed_seconds() const { return std::chrono::duration<double>(Clock::now() - start_).count(); }

  // "1:05", "1:02:03"
  static std::string format_duration(double seconds) {
    const auto s = static_cast<std::int64_t>(seconds + 0.5);
    if (s >= 3600) return fmt::format("{}:{:02}:{:02}", s / 3600, s / 60 % 60, s % 60);
    return fmt::format("{}:{:02}", s / 60, s % 60);
  }

 private:
  std::string line(Clock::time_point now) const {
    const double elapsed = std::chrono::duration<double>(now - start_).count();
    const double rate = elapsed > 0 ? static_cast<double>(done_) / elapsed : 0.0;
    constexpr int width = 24;
    const auto filled = static_cast<int>(done_ * width / total_);
    std::string bar(static_cast<std::size_t>(filled), '#');
    bar.resize(width, '.');
    std::string timing = done_ < total_ && rate > 0
                             ? fmt::format("ETA {}", format_duration(static_cast<double>(total_ - done_) / rate))
                             : fmt::format("in {}", format_duration(elapsed));
    std::string text = fmt::format("{} [{}] {}/{} {:.1f} {}/s {}", label_, bar, done_, total_, rate, unit_, timing);
    if (!note_.empty()) text += fmt::format("  {}", note_);
    return text;
  }

  std::string label_;
  std::string unit_;
  std::int64_t total_;
  std::FILE* out_;
  bool interactive_;
  Clock::time_point start_;
  Clock::time_point last_draw_;
  std::int64_t done_ = 0;
  std::int64_t last_tenth_ = 0;
  std::string note_;
  bool finished_ = false;
};

}  // namespace lowrank::tools
