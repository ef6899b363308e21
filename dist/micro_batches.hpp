#pragma once
// dist::MicroBatchGradients: the gradient of one optimizer step, summed over its micro-batches in a
// fixed order so that the result does not depend on how many ranks computed them.
//
// A step's global batch is split into M micro-batches 0..M-1; with N ranks (N divides M) rank r computes
// micro-batches r*M/N .. (r+1)*M/N - 1, one backward each. Every rank then holds every micro-batch's
// gradient (all-gathered bucket by bucket, started as soon as a micro-batch's backward is done, so that
// sending it overlaps the next micro-batch's compute) and adds them on its own in micro-batch order:
//   g = ((g_0 + g_1) + g_2) + ... + g_{M-1},   then g *= 1/M   (skipped when M = 1)
// The same float operations in the same order on every rank and for every N: a run on 1, 2 or 3 ranks
// ends with the same gradient bits, and so (every rank applying the same optimizer step) the same
// parameters. With M = 1 the gradient is the plain backward's, bit for bit.
//
// The price of order independence: every rank receives M gradients, not one (M x the parameters' size in
// floats per step and per rank). For LoRA that is small (GPT-2 124M, r 8 on q,v: 1.2 MB per micro-batch);
// for full fine-tuning it is M copies of the model's gradients (docs/distributed.md).
//
// CUDA gradients are staged through host memory.
#include <cstdint>
#include <memory>
#include <string>
#include <unordered_map>
#include <vector>

#include "lowrank/autodiff/parameter.hpp"
#include "lowrank/dist/communicator.hpp"

namespace lowrank::dist {

class MicroBatchGradients {
 public:
  // `bucket_bytes`: parameters are grouped, in reverse order (backward produces the last ones first),
  // into buckets of about this many bytes of gradient; each bucket is one nonblocking all-gather.
  // Errors: M < 1, or M not a multiple of the communicator's size (naming both).
  MicroBatchGradients(Communicator& comm, Parameters parameters, std::int64_t micro_batches,
                      std::size_t bucket_bytes = std::size_t{8} << 20);
  ~MicroBatchGradients();
  MicroBatchGradients(const MicroBatchGradients&) = delete;
  MicroBatchGradients& operator=(const MicroBatchGradients&) = delete;

  std::int64_t micro_batches() const { return micro_batches_; }
  std::int64_t per_rank() const { return per_rank_; }
  // Global index of this rank's j-th micro-batch.
  std::int64_t global_index(std::int64_t j) const { return comm_.rank() * per_rank_ + j; }
  std::size_t bucket_count() const { return buckets_.size(); }

  // After the backward of this rank's j-th micro-batch (j = 0, 1, ... in order; the parameters' gradients
  // hold exactly that micro-batch's gradient): copies them into slot j, zeroes them for the next
  // micro-batch and starts all-gathering slot j (the buckets ready() has not started yet).
  // `loss` is the micro-batch's loss.
  void add(std::int64_t j, double loss);
  // During the backward of the micro-batch add() will get next: the gradients of `done` are final.
  // Each bucket whose parameters are all final is copied and its all-gather started at once, so that it
  // travels while backward computes the rest (nn::GPT::set_gradients_ready calls this per block). Every
  // rank runs the same backward, so the buckets start in the same order everywhere, as MPI requires.
  void ready(const Parameters& done);

  // Waits for every slot, writes (1/M)·Σ g_m (in micro-batch order) into the parameters' gradients and
  // returns the mean loss, Σ loss_m / M, also summed in order. Every rank must have added per_rank()
  // micro-batches; a rank whose forward or backward failed passes what went wrong as `failure` instead:
  // it still takes part in the gathers it had not started (so that every rank issues the same MPI calls
  // in the same order) and then every rank throws lowrank::Error naming the failed rank
  // (Communicator::agree).
  double finish(const std::string& failure = {});

 private:
  void bucket_ready(std::size_t slot, std::size_t bucket);
  struct Bucket {
    std::vector<std::size_t> parameters;
    std::size_t offset = 0, size = 0;  // in floats, within one micro-batch's flat gradient
  };
  Communicator& comm_;
  Parameters parameters_;
  std::vector<std::size_t> parameter_offsets_;
  std::vector<Bucket> buckets_;
  std::int64_t micro_batches_, per_rank_;
  std::size_t floats_ = 0;  // one micro-batch's gradient
  // local_[j]: this rank's slot j; gathered_[j][b]: bucket b of every rank's slot j, rank-major.
  std::vector<std::vector<float>> local_;
  std::vector<std::vector<std::vector<float>>> gathered_;
  std::vector<std::unique_ptr<Pending>> pending_;
  std::vector<double> local_losses_;
  std::vector<bool> bucket_started_;  // per slot and bucket
  std::unordered_map<const Parameter*, std::size_t> index_of_;
  std::vector<std::size_t> bucket_of_;       // per parameter
  std::vector<std::size_t> final_in_bucket_;  // for the slot being computed: parameters ready per bucket
  std::vector<bool> parameter_final_;
  std::size_t next_slot_ = 0;
};

}  // namespace lowrank::dist
