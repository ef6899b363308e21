#pragma once
// What the training commands leave behind besides the weights: metrics.csv (one row per optimizer step),
// loss.png drawn from it by gnuplot when gnuplot is installed, and JSON reports; all written atomically.
#include <cstdint>
#include <filesystem>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

namespace lowrank::tools {

struct MetricsRow {
  std::int64_t step = 0;      // 1-based optimizer step within its phase
  std::string phase;          // "pretrain", "lora", "train", or "eval" (the held-out loss after that step)
  double loss = 0.0;
  double lr = 0.0;
  double tokens_per_second = 0.0;
  bool skipped = false;       // the step's loss or gradients were not finite and the update was skipped
};

class MetricsLog {
 public:
  // perplexity is exp(loss), written for the reader (eval rows especially) and not read back.
  static constexpr const char* header = "step,phase,loss,lr,tokens_per_s,skipped,perplexity";
  // The header of files written before the perplexity column, which read_csv also reads.
  static constexpr const char* header_without_perplexity = "step,phase,loss,lr,tokens_per_s,skipped";

  void add(MetricsRow row) { rows_.push_back(std::move(row)); }
  const std::vector<MetricsRow>& rows() const { return rows_; }
  // Keeps the rows of steps before `step` (resuming from a checkpoint taken after step - 1).
  void truncate_before(std::int64_t step);

  // Losses are printed with 17 significant digits, enough to tell any two doubles apart, so that two
  // runs can be compared bit for bit through their CSV files.
  std::string csv() const;
  void write_csv(const std::filesystem::path& file) const;
  // Reads a file written by write_csv; throws naming the file and line for anything else.
  static MetricsLog read_csv(const std::filesystem::path& file);

 private:
  std::vector<MetricsRow> rows_;
};

// Draws loss against step (one line per phase, log scale) into `png` with gnuplot. Returns false,
// writing nothing, when gnuplot is not on PATH or fails; the CSV stays the record.
bool plot_losses(const std::filesystem::path& csv, const std::filesystem::path& png);

void write_json(const std::filesystem::path& file, const nlohmann::json& value);
nlohmann::json read_json(const std::filesystem::path& file);

}  // namespace lowrank::tools
