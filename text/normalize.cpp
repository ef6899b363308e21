#include "lowrank/text/normalize.hpp"

#include <algorithm>
#include <cstdint>
#include <span>
#include <vector>

#include "lowrank/text/unicode.hpp"

namespace lowrank::text {
namespace {

struct CombiningClassRange {
  char32_t first;
  char32_t last;
  std::uint8_t combining_class;
};
struct Decomposition {
  char32_t code_point;
  char32_t first;
  char32_t second;  // 0 when the decomposition is a single code point
};
struct Composition {
  char32_t first;
  char32_t second;
  char32_t composite;
};

#include "lowrank/text/nfc_tables.inc"

// Hangul syllables compose and decompose by arithmetic (Unicode chapter 3.12), not by table.
constexpr char32_t kHangulFirst = 0xAC00, kLeadFirst = 0x1100, kVowelFirst = 0x1161, kTrailFirst = 0x11A7;
constexpr char32_t kLeadCount = 19, kVowelCount = 21, kTrailCount = 28;
constexpr char32_t kSyllableCount = kLeadCount * kVowelCount * kTrailCount;
// Stands for an invalid byte (kept as kRawByte + byte): a starter that nothing composes with.
constexpr char32_t kRawByte = 0x110000;

int combining_class(char32_t cp) {
  if (cp < 0x300 || cp >= kRawByte) return 0;
  const auto after = std::upper_bound(std::begin(kCombiningClasses), std::end(kCombiningClasses), cp,
                                      [](char32_t c, const CombiningClassRange& r) { return c < r.first; });
  if (after == std::begin(kCombiningClasses)) return 0;
  const auto& range = *std::prev(after);
  return cp <= range.last ? range.combining_class : 0;
}

void decompose(char32_t cp, std::vector<char32_t>& out) {
  if (cp >= kHangulFirst && cp < kHangulFirst + kSyllableCount) {
    const char32_t index = cp - kHangulFirst;
    out.push_back(kLeadFirst + index / (kVowelCount * kTrailCount));
    out.push_back(kVowelFirst + (index % (kVowelCount * kTrailCount)) / kTrailCount);
    if (index % kTrailCount != 0) out.push_back(kTrailFirst + index % kTrailCount);
    return;
  }
  const auto found = std::lower_bound(std::begin(kDecompositions), std::end(kDecompositions), cp,
                                      [](const Decomposition& d, char32_t c) { return d.code_point < c; });
  if (cp < 0xC0 || cp >= kRawByte || found == std::end(kDecompositions) || found->code_point != cp) {
    out.push_back(cp);
    return;
  }
  decompose(found->first, out);
  if (found->second != 0) decompose(found->second, out);
}

// The primary composite of (first, second), or 0.
char32_t compose(char32_t first, char32_t second) {
  if (first >= kLeadFirst && first < kLeadFirst + kLeadCount && second >= kVowelFirst &&
      second < kVowelFirst + kVowelCount)
    return kHangulFirst + ((first - kLeadFirst) * kVowelCount + (second - kVowelFirst)) * kTrailCount;
  if (first >= kHangulFirst && first < kHangulFirst + kSyllableCount && (first - kHangulFirst) % kTrailCount == 0 &&
      second > kTrailFirst && second < kTrailFirst + kTrailCount)
    return first + (second - kTrailFirst);
  const auto found = std::lower_bound(std::begin(kCompositions), std::end(kCompositions), std::pair{first, second},
                                      [](const Composition& c, const std::pair<char32_t, char32_t>& key) {
                                        return std::pair{c.first, c.second} < key;
                                      });
  if (found != std::end(kCompositions) && found->first == first && found->second == second) return found->composite;
  return 0;
}

}  // namespace

std::string nfc(std::string_view text) {
  std::vector<char32_t> code_points;
  bool needs_work = false;
  for (std::size_t pos = 0; pos < text.size();) {
    const Utf8Step step = decode_utf8(text, pos);
    code_points.push_back(step.valid ? step.code_point : kRawByte + step.code_point);
    if (step.valid && step.code_point >= 0x300) needs_work = true;
    pos += step.length;
  }
  if (!needs_work) return std::string(text);

  std::vector<char32_t> decomposed;
  decomposed.reserve(code_points.size());
  for (char32_t cp : code_points) decompose(cp, decomposed);

  // Canonical ordering: each run of non-starters sorted, stably, by combining class.
  for (std::size_t i = 0; i < decomposed.size();) {
    if (combining_class(decomposed[i]) == 0) {
      ++i;
      continue;
    }
    std::size_t end = i;
    while (end < decomposed.size() && combining_class(decomposed[end]) != 0) ++end;
    std::stable_sort(decomposed.begin() + static_cast<std::ptrdiff_t>(i), decomposed.begin() + static_cast<std::ptrdiff_t>(end),
                     [](char32_t a, char32_t b) { return combining_class(a) < combining_class(b); });
    i = end;
  }

  // Canonical composition: a character joins the last starter unless a character between them has a
  // combining class that is zero or not smaller than its own (it is "blocked").
  std::vector<char32_t> composed;
  composed.reserve(decomposed.size());
  std::ptrdiff_t starter = -1;
  int last_class = 0;
  for (char32_t cp : decomposed) {
    const int cls = combining_class(cp);
    if (starter >= 0) {
      const bool adjacent = static_cast<std::size_t>(starter) + 1 == composed.size();
      const bool blocked = !adjacent && (last_class == 0 || last_class >= cls);
      if (!blocked) {
        if (const char32_t composite = compose(composed[static_cast<std::size_t>(starter)], cp); composite != 0) {
          composed[static_cast<std::size_t>(starter)] = composite;
          continue;
        }
      }
    }
    if (cls == 0) starter = static_cast<std::ptrdiff_t>(composed.size());
    last_class = cls;
    composed.push_back(cp);
  }

  std::string out;
  out.reserve(text.size());
  for (char32_t cp : composed) {
    if (cp >= kRawByte)
      out.push_back(static_cast<char>(cp - kRawByte));
    else
      append_utf8(out, cp);
  }
  return out;
}

}  // namespace lowrank::text
