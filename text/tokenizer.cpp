#include "lowrank/text/tokenizer.hpp"

#include "lowrank/core/error.hpp"

namespace lowrank::text {

std::vector<TextSegment> split_on_special_tokens(
    std::string_view text, std::span<const std::pair<std::string, std::int32_t>> specials) {
  std::vector<TextSegment> segments;
  std::size_t done = 0;
  while (done < text.size()) {
    std::size_t best_pos = std::string_view::npos;
    const std::pair<std::string, std::int32_t>* best = nullptr;
    for (const auto& special : specials) {
      if (special.first.empty()) fail("split_on_special_tokens: special token {} has an empty spelling", special.second);
      const std::size_t pos = text.find(special.first, done);
      if (pos == std::string_view::npos) continue;
      if (pos < best_pos || (pos == best_pos && special.first.size() > best->first.size())) {
        best_pos = pos;
        best = &special;
      }
    }
    if (best == nullptr) break;
    if (best_pos > done) segments.push_back({text.substr(done, best_pos - done), -1});
    segments.push_back({text.substr(best_pos, best->first.size()), best->second});
    done = best_pos + best->first.size();
  }
  if (done < text.size()) segments.push_back({text.substr(done), -1});
  return segments;
}

}  // namespace lowrank::text
