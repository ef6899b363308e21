#pragma once
// The optimizers, gradient clipping and learning-rate schedules in one include.
#include "lowrank/optim/adam.hpp"
#include "lowrank/optim/clip.hpp"
#include "lowrank/optim/optimizer.hpp"
#include "lowrank/optim/schedule.hpp"
#include "lowrank/optim/sgd.hpp"
