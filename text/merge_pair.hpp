#pragma once
#include <cstdint>

namespace lowrank::text {

// One key for the pair of token ids (left, right) that a BPE merge joins: left in the high half, so that
// ordering keys orders pairs by left id first, then right id (the trainer's tie-break relies on it).
inline std::uint64_t merge_pair_key(std::int32_t left, std::int32_t right) {
  return (static_cast<std::uint64_t>(static_cast<std::uint32_t>(left)) << 32) | static_cast<std::uint32_t>(right);
}

}  // namespace lowrank::text
