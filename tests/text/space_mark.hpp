#pragma once
// GPT-2's byte-level alphabet writes a space as 'Ġ' (U+0120); the BPE tests spell tokens with it.
#include <string>

namespace lowrank::test {

inline const std::string G = "\xC4\xA0";

}  // namespace lowrank::test
