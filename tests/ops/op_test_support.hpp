#pragma once
// What the op tests share: random parameters and the gradcheck assertion.
#include <doctest/doctest.h>

#include <string>

#include "lowrank/autodiff/autodiff.hpp"
#include "../support/checks.hpp"
#include "../support/random.hpp"

