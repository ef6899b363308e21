#pragma once
// dist::Communicator: the processes of a data-parallel run. One implementation wraps MPI_COMM_WORLD
// (built with LOWRANK_MPI and started by mpirun); the other is the single process of an ordinary run,
// so that code written against a communicator runs unchanged with or without MPI.
//
// Only what data-parallel training needs: rank and size, all-gathers (blocking and nonblocking) and an
// agreement on failure. There is deliberately no all-reduce: MPI_Allreduce may add the ranks' values in
// any order, and a sum that depends on the number of ranks would make results depend on it. The ordered
// sum over micro-batches is built on all_gather (dist/micro_batches.hpp).
#include <cstdint>
#include <memory>
#include <span>
#include <string>

#include "lowrank/core/error.hpp"

namespace lowrank::dist {

// What Communicator::agree throws on every rank when one failed: the same message everywhere, so that a
// program prints it once (reported_here() on rank 0 only) and every rank exits.
class RankFailure : public Error {
 public:
  RankFailure(const std::string& message, int failed_rank, bool reported_here)
      : Error(message), failed_rank_(failed_rank), reported_here_(reported_here) {}
  int failed_rank() const { return failed_rank_; }
  bool reported_here() const { return reported_here_; }

 private:
  int failed_rank_;
  bool reported_here_;
};

// A nonblocking operation in flight: its buffers must stay alive and untouched until wait() returns.
class Pending {
 public:
  virtual ~Pending() = default;
  virtual void wait() = 0;
};

class Communicator {
 public:
  virtual ~Communicator() = default;
  virtual int rank() const = 0;
  virtual int size() const = 0;
  bool is_root() const { return rank() == 0; }
  // "MPI (3 ranks)" or "single process": for messages.
  virtual std::string description() const = 0;

  // Every rank passes `local` of the same length; `all` (size() * local.size() values) receives the
  // ranks' values in rank order.
  virtual void all_gather(std::span<const float> local, std::span<float> all) = 0;
  virtual void all_gather(std::span<const double> local, std::span<double> all) = 0;
  // The same, started now and finished by wait() (MPI_Iallgather): communication overlaps whatever
  // the caller computes meanwhile, as far as the MPI library progresses it in the background.
  virtual std::unique_ptr<Pending> start_all_gather(std::span<const float> local, std::span<float> all) = 0;

  // Every rank says whether its part succeeded: `failure` empty for yes, else what went wrong. When any
  // rank failed, every rank throws RankFailure "rank R of N: <R's message>" for the lowest such R, so
  // that all stop together instead of waiting forever in the next collective. A single process throws
  // lowrank::Error with the message unchanged.
  virtual void agree(const std::string& failure) = 0;
};

// The communicator of this process: MPI_COMM_WORLD when this build has MPI and the process was started
// by an MPI launcher (mpirun sets OMPI_COMM_WORLD_SIZE, PMI_SIZE or PMIX_RANK), else a single process.
// MPI is initialised by the first call and finalised at exit. MPI errors return codes (MPI_ERRORS_RETURN)
// that become lowrank::Error naming the call and the rank.
Communicator& world();

// The single-process communicator (size 1), also in MPI builds.
std::unique_ptr<Communicator> single_process();

// Whether this build has MPI (LOWRANK_MPI), and whether an MPI launcher started this process.
bool built_with_mpi();
bool launched_by_mpi();

}  // namespace lowrank::dist
