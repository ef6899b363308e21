#include "lowrank/dist/communicator.hpp"

#include <algorithm>
#include <cstdlib>
#include <limits>
#include <vector>

#include <fmt/format.h>

#include "lowrank/core/error.hpp"

#if defined(LOWRANK_WITH_MPI)
#include <mpi.h>
#endif

namespace lowrank::dist {
namespace {

class SingleProcess final : public Communicator {
 public:
  int rank() const override { return 0; }
  int size() const override { return 1; }
  std::string description() const override { return "single process"; }
  void all_gather(std::span<const float> local, std::span<float> all) override { copy(local, all); }
  void all_gather(std::span<const double> local, std::span<double> all) override { copy(local, all); }
  std::unique_ptr<Pending> start_all_gather(std::span<const float> local, std::span<float> all) override {
    copy(local, all);
    return std::make_unique<Done>();
  }
  void agree(const std::string& failure) override {
    if (!failure.empty()) throw Error(failure);
  }

 private:
  struct Done final : Pending {
    void wait() override {}
  };
  template <class T> static void copy(std::span<const T> local, std::span<T> all) {
    if (all.size() != local.size())
      fail("dist::Communicator::all_gather: {} values gathered into {} (expected size 1 x {})", local.size(), all.size(), local.size());
    std::copy(local.begin(), local.end(), all.begin());
  }
};

#if defined(LOWRANK_WITH_MPI)

std::string mpi_error_text(int code) {
  char text[MPI_MAX_ERROR_STRING];
  int length = 0;
  if (MPI_Error_string(code, text, &length) != MPI_SUCCESS) return fmt::format("MPI error {}", code);
  return std::string(text, static_cast<std::size_t>(length));
}

class Mpi final : public Communicator {
 public:
  Mpi() {
    int initialized = 0;
    MPI_Initialized(&initialized);
    if (!initialized) {
      int provided = 0;
      // Only the thread that called main() calls MPI; OpenMP threads compute in between.
      if (MPI_Init_thread(nullptr, nullptr, MPI_THREAD_FUNNELED, &provided) != MPI_SUCCESS)
        fail("dist: MPI_Init_thread failed");
      std::atexit([] {
        int finalized = 0;
        MPI_Finalized(&finalized);
        if (!finalized) MPI_Finalize();
      });
    }
    MPI_Comm_set_errhandler(MPI_COMM_WORLD, MPI_ERRORS_RETURN);
    MPI_Comm_rank(MPI_COMM_WORLD, &rank_);
    MPI_Comm_size(MPI_COMM_WORLD, &size_);
  }
  int rank() const override { return rank_; }
  int size() const override { return size_; }
  std::string description() const override { return fmt::format("MPI ({} rank{})", size_, size_ == 1 ? "" : "s"); }

  void all_gather(std::span<const float> local, std::span<float> all) override { gather(local, all, MPI_FLOAT); }
  void all_gather(std::span<const double> local, std::span<double> all) override { gather(local, all, MPI_DOUBLE); }

  std::unique_ptr<Pending> start_all_gather(std::span<const float> local, std::span<float> all) override {
    check_sizes(local.size(), all.size());
    auto pending = std::make_unique<Request>(rank_);
    check(MPI_Iallgather(local.data(), count(local.size()), MPI_FLOAT, all.data(), count(local.size()), MPI_FLOAT, MPI_COMM_WORLD,
                         &pending->request),
          "MPI_Iallgather");
    return pending;
  }

  void agree(const std::string& failure) override {
    // The lowest failing rank (size_ when none) and then its message, broadcast from it.
    const int mine = failure.empty() ? size_ : rank_;
    int first = size_;
    check(MPI_Allreduce(&mine, &first, 1, MPI_INT, MPI_MIN, MPI_COMM_WORLD), "MPI_Allreduce");
    if (first == size_) return;
    int length = rank_ == first ? static_cast<int>(failure.size()) : 0;
    check(MPI_Bcast(&length, 1, MPI_INT, first, MPI_COMM_WORLD), "MPI_Bcast");
    std::string message = rank_ == first ? failure : std::string(static_cast<std::size_t>(length), ' ');
    check(MPI_Bcast(message.data(), length, MPI_CHAR, first, MPI_COMM_WORLD), "MPI_Bcast");
    throw RankFailure(fmt::format("rank {} of {}: {}", first, size_, message), first, rank_ == 0);
  }

 private:
  struct Request final : Pending {
    explicit Request(int rank_) : rank(rank_) {}
    ~Request() override {
      // A request abandoned by an exception is completed here so that MPI does not write into freed buffers.
      if (request != MPI_REQUEST_NULL) MPI_Wait(&request, MPI_STATUS_IGNORE);
    }
    void wait() override {
      const int code = MPI_Wait(&request, MPI_STATUS_IGNORE);
      if (code != MPI_SUCCESS) fail("dist: MPI_Wait (all-gather) failed on rank {}: {}", rank, mpi_error_text(code));
    }
    int rank;
    MPI_Request request = MPI_REQUEST_NULL;
  };

  static int count(std::size_t n) {
    if (n > static_cast<std::size_t>(std::numeric_limits<int>::max()))
      fail("dist: {} values in one MPI call exceed MPI's int count; use smaller buckets", n);
    return static_cast<int>(n);
  }
  void check_sizes(std::size_t local, std::size_t all) const {
    if (all != local * static_cast<std::size_t>(size_))
      fail("dist::Communicator::all_gather: {} values gathered into {} (expected {} x {})", local, all, size_, local);
  }
  template <class T> void gather(std::span<const T> local, std::span<T> all, MPI_Datatype type) {
    check_sizes(local.size(), all.size());
    check(MPI_Allgather(local.data(), count(local.size()), type, all.data(), count(local.size()), type, MPI_COMM_WORLD),
          "MPI_Allgather");
  }
  void check(int code, const char* call) const {
    if (code != MPI_SUCCESS) fail("dist: {} failed on rank {} of {}: {}", call, rank_, size_, mpi_error_text(code));
  }

  int rank_ = 0, size_ = 1;
};

#endif

}  // namespace

bool built_with_mpi() {
#if defined(LOWRANK_WITH_MPI)
  return true;
#else
  return false;
#endif
}

bool launched_by_mpi() {
  for (const char* name : {"OMPI_COMM_WORLD_SIZE", "PMI_SIZE", "PMIX_RANK"})
    if (std::getenv(name) != nullptr) return true;
  return false;
}

std::unique_ptr<Communicator> single_process() { return std::make_unique<SingleProcess>(); }

Communicator& world() {
  static const std::unique_ptr<Communicator> instance = []() -> std::unique_ptr<Communicator> {
#if defined(LOWRANK_WITH_MPI)
    if (launched_by_mpi()) return std::make_unique<Mpi>();
#else
    // Without MPI every process started by mpirun would think it alone and write the same files.
    for (const char* name : {"OMPI_COMM_WORLD_SIZE", "PMI_SIZE"})
      if (const char* value = std::getenv(name); value != nullptr && std::string(value) != "1")
        fail("dist: started by an MPI launcher ({}={}) but this lowrank was built without MPI; configure with "
             "-DLOWRANK_MPI=ON (Open MPI: apt-get install openmpi-bin libopenmpi-dev)",
             name, value);
#endif
    return single_process();
  }();
  return *instance;
}

}  // namespace lowrank::dist
