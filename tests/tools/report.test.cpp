#include <doctest/doctest.h>

#include <cmath>
#include <fstream>

#include "lowrank/core/error.hpp"
#include "report.hpp"
#include "run_cli.hpp"

using lowrank::test::ScratchDir;
using lowrank::tools::MetricsLog;

TEST_CASE("cli: metrics.csv keeps every bit of the losses and truncates for a resume") {
  ScratchDir dir("cli_metrics");
  MetricsLog log;
  const double awkward = std::nextafter(1.0 / 3.0, 1.0);
  log.add({1, "train", awkward, 1e-3, 1234.5, false});
  log.add({2, "train", 2.0 / 7.0, 2e-3, 1000.0, true});
  log.add({3, "train", 0.1, 3e-3, 999.0, false});
  log.write_csv(dir / "metrics.csv");
  auto back = MetricsLog::read_csv(dir / "metrics.csv");
  REQUIRE(back.rows().size() == 3);
  CHECK(back.rows()[0].loss == awkward);
  CHECK(back.rows()[1].loss == 2.0 / 7.0);
  CHECK(back.rows()[1].skipped);
  CHECK(back.rows()[2].lr == 3e-3);
  back.truncate_before(3);
  CHECK(back.rows().size() == 2);

  CHECK(log.csv().find(fmt::format(",{:.9g}\n", std::exp(2.0 / 7.0))) != std::string::npos);  // perplexity = exp(loss)
  // Files written before the perplexity column still read.
  std::ofstream(dir / "old.csv") << MetricsLog::header_without_perplexity << "\n4,eval,0.5,0.001,0,0\n";
  const auto old = MetricsLog::read_csv(dir / "old.csv");
  REQUIRE(old.rows().size() == 1);
  CHECK(old.rows()[0].loss == 0.5);
  CHECK(old.rows()[0].phase == "eval");
  std::ofstream(dir / "bad.csv") << MetricsLog::header << "\n1,train,x,0,0,0\n";
  CHECK_THROWS_WITH_AS(MetricsLog::read_csv(dir / "bad.csv"), doctest::Contains("line 2"), lowrank::Error);
}
