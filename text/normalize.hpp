#pragma once
#include <string>
#include <string_view>

namespace lowrank::text {

// Unicode normalization form C (canonical decomposition, canonical ordering, canonical composition),
// with the tables of text/nfc_tables.inc (generated from Python's unicodedata; the Unicode version is
// named there). Bytes that are not valid UTF-8 are copied through unchanged and block composition
// across them, so any byte string can be normalized. Text of code points below U+0300 is returned as
// it is without table lookups.
std::string nfc(std::string_view text);

}  // namespace lowrank::text
