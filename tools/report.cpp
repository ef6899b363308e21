#include "report.hpp"

#include <cmath>
#include <cstdlib>
#include <fstream>
#include <set>
#include <sstream>

#include <fmt/format.h>

#include "lowrank/core/error.hpp"
#include "lowrank/io/atomic_file.hpp"
#include "lowrank/io/text_file.hpp"

namespace lowrank::tools {
namespace fs = std::filesystem;
namespace {

// A path inside a gnuplot single-quoted string, where a quote is written twice.
std::string gnuplot_quoted(const fs::path& path) {
  std::string out = "'";
  for (char c : path.string()) out += c == '\'' ? std::string("''") : std::string(1, c);
  return out + "'";
}

// A path as one word for /bin/sh.
std::string shell_quoted(const fs::path& path) {
  std::string out = "'";
  for (char c : path.string()) out += c == '\'' ? std::string("'\\''") : std::string(1, c);
  return out + "'";
}

}  // namespace

void MetricsLog::truncate_before(std::int64_t step) {
  std::erase_if(rows_, [step](const MetricsRow& row) { return row.step >= step; });
}

std::string MetricsLog::csv() const {
  std::string out = std::string(header) + "\n";
  for (const auto& r : rows_)
    out += fmt::format("{},{},{:.17g},{:.17g},{:.6g},{},{:.9g}\n", r.step, r.phase, r.loss, r.lr, r.tokens_per_second, r.skipped ? 1 : 0,
                       std::exp(r.loss));
  return out;
}

void MetricsLog::write_csv(const fs::path& file) const { write_file_atomically(file, csv()); }

MetricsLog MetricsLog::read_csv(const fs::path& file) {
  std::ifstream in(file);
  if (!in) fail("{}: cannot be opened for reading", file.string());
  std::string line;
  if (!std::getline(in, line) || (line != header && line != header_without_perplexity))
    fail("{}: line 1 is not the header '{}'", file.string(), header);
  const bool with_perplexity = line == header;
  MetricsLog log;
  for (std::size_t number = 2; std::getline(in, line); ++number) {
    std::istringstream fields(line);
    std::string step, phase, loss, lr, rate, skipped;
    if (!std::getline(fields, step, ',') || !std::getline(fields, phase, ',') || !std::getline(fields, loss, ',') ||
        !std::getline(fields, lr, ',') || !std::getline(fields, rate, ',') ||
        !std::getline(fields, skipped, with_perplexity ? ',' : '\n'))
      fail("{}: line {} does not have the {} fields of '{}'", file.string(), number, with_perplexity ? 7 : 6,
           with_perplexity ? header : header_without_perplexity);
    try {
      log.add({std::stoll(step), phase, std::stod(loss), std::stod(lr), std::stod(rate), skipped == "1"});
    } catch (const std::exception&) {
      fail("{}: line {} holds a field that is not a number: '{}'", file.string(), number, line);
    }
  }
  return log;
}

bool plot_losses(const fs::path& csv, const fs::path& png) {
  if (std::system("command -v gnuplot >/dev/null 2>&1") != 0) return false;
  const MetricsLog log = MetricsLog::read_csv(csv);
  std::set<std::string> phases;
  for (const auto& r : log.rows()) phases.insert(r.phase);
  if (phases.empty()) return false;

  // gnuplot writes to a temporary name that is renamed on success, like every other output.
  const fs::path temporary = png.string() + ".tmp";
  const fs::path script = png.string() + ".gp";
  std::string plots;
  for (const auto& phase : phases) {
    if (!plots.empty()) plots += ", ";
    plots += fmt::format("{} using 1:(strcol(2) eq '{}' ? $3 : NaN) with lines lw 2 title '{}'", gnuplot_quoted(csv), phase, phase);
  }
  const std::string text = fmt::format(
      "set terminal pngcairo size 900,500\n"
      "set output {}\n"
      "set datafile separator ','\n"
      "set key autotitle columnhead\n"
      "set logscale y\n"
      "set grid\n"
      "set xlabel 'step'\n"
      "set ylabel 'cross-entropy (nats per predicted token)'\n"
      "plot {}\n",
      gnuplot_quoted(temporary), plots);
  write_file_atomically(script, text);
  const int status = std::system(fmt::format("gnuplot {} >/dev/null 2>&1", shell_quoted(script)).c_str());
  std::error_code ignored;
  fs::remove(script, ignored);
  if (status != 0 || !fs::exists(temporary)) {
    fs::remove(temporary, ignored);
    return false;
  }
  fs::rename(temporary, png);
  return true;
}

void write_json(const fs::path& file, const nlohmann::json& value) { write_file_atomically(file, value.dump(2) + "\n"); }

nlohmann::json read_json(const fs::path& file) {
  const std::string text = read_text(file);
  try {
    return nlohmann::json::parse(text);
  } catch (const nlohmann::json::exception& e) {
    fail("{}: not valid JSON: {}", file.string(), e.what());
  }
}

}  // namespace lowrank::tools
