// Inputs the fuzz targets (tests/fuzz) crashed on, fed to the same code path: each must now end in a
// clean lowrank::Error. The inputs are also in the seed corpus as regression_*.
#include <doctest/doctest.h>

#include <string>

#include "lowrank/core/error.hpp"
#include "lowrank/io/safetensors.hpp"

using namespace lowrank;

TEST_CASE("reliability: fuzz finding: a number past double's range in a safetensors header is a clean error") {
  // Found by fuzz_safetensors in 150 s: the float literal 4294e67296 in a shape made nlohmann::json
  // throw out_of_range (not parse_error), which escaped SafetensorsFile::parse as a foreign exception.
  // The input as found (tests/fuzz/corpus/safetensors/regression_number_overflow): header length 80,
  // then 85 bytes, of which the header's 80 are the JSON text and five spaces.
  const std::string header_and_data = R"({"w":{"dtype":"F32","oshape":[4294967296,4294e67296],"data_offsets":[0,4]}}      )";
  const std::string file = std::string("\x50\0\0\0\0\0\0\0", 8) + header_and_data + std::string("\0\0\x80\x3f", 4);
  REQUIRE(file.size() == 93);
  CHECK_THROWS_WITH_AS(SafetensorsFile::parse({reinterpret_cast<const std::byte*>(file.data()), file.size()}, "fuzz-input"),
                       "fuzz-input: header is not valid JSON: number overflow parsing '4294e67296'", Error);
}
