#pragma once
// The typed tape. `eval(expression)` flattens the expression DAG into a compile-time list of slots in
// topological order (children before parents; a Shared tag is one slot however often it is used),
// stores one record per slot in a hana::tuple, and runs forward. `backward(tape)` walks the slots in
// reverse. Everything that depends only on the graph is decided at compile time:
//   - needs_grad of each slot (leaves: input/frozen no, param yes; ops: any input),
//   - which input gradients each op computes (the op's backward is instantiated only for those),
//   - which values are kept for backward (an op's `reads` rule), and when each other value is released
//     during forward (right after its last consumer ran).
// Shapes, batch and sequence length stay runtime values. This header is the only Hana-heavy one.
//
// A worked example, five slots. For
//   struct H {};
//   auto h = share<H>(matmul(input(x), param(W)));
//   auto y = add(h, gelu(h));
// `flatten` visits arguments left to right, depth first, and appends a node after its arguments:
//   slot 0  input(x)        leaf                      needs no gradient
//   slot 1  param(W)        leaf                      needs a gradient
//   slot 2  matmul(0, 1)    the first use of H        needs one (slot 1 does); defines H = slot 2
//           (the second use of H, inside gelu, finds H defined and adds no slot: it is slot 2 again)
//   slot 3  gelu(2)                                   needs one
//   slot 4  add(2, 3)       the root                  needs one
// The analysis then reads each op's `reads` rule with its inputs' needs: matmul needs only dW, so it
// reads x (slot 0) and not W; gelu reads its input (slot 2); add reads nothing. So slot 2 is retained
// for backward, and so is the root. last_use: slots 0 and 1 at 2, slots 2 and 3 at 4. Forward runs
// slots 0..4; backward runs 4, 3, 2 (leaves have no backward; W's gradient is the parameter's).
// (tests/autodiff/tape_layout.test.cpp checks these facts.)
//
// Reading order: tape_detail holds the compile-time part, in the order it is used — the slot list and
// `flatten`, then `analysis` (constexpr tables over the slots), then the run-time records. `Tape` fills
// the records at run time by walking the expression in the same order as the compile-time `flatten`
// (arguments left to right, a node after its arguments, a shared expression once), so the k-th record
// filled is slot k; then it runs forward and, on request, backward.
#include <array>
#include <concepts>
#include <cstddef>
#include <cstdint>
#include <string>
#include <tuple>
#include <type_traits>
#include <utility>
#include <vector>

#include <boost/hana/at.hpp>
#include <boost/hana/tuple.hpp>

#include "lowrank/autodiff/anomaly.hpp"
#include "lowrank/autodiff/leaves.hpp"
#include "lowrank/core/elementwise.hpp"

namespace lowrank {
namespace tape_detail {

// ---- compile-time layout --------------------------------------------------------------------------
template <class... T> struct list {};
template <class Tag, std::size_t I, class E> struct definition {};  // share<Tag>(E) is slot I

template <class Leaf> struct LeafSlot {
  using leaf = Leaf;
  static constexpr bool is_leaf = true;
  static constexpr std::size_t arity = 0;
  using children = std::index_sequence<>;
};
template <class Op, class Children> struct OpSlot {
  using op = Op;
  static constexpr bool is_leaf = false;
  static constexpr std::size_t arity = Op::arity;
  using children = Children;
};

template <class Slots, class Definitions> struct state {};

template <class State, class Slot> struct push;
template <class... Slots, class Definitions, class Slot> struct push<state<list<Slots...>, Definitions>, Slot> {
  using type = state<list<Slots..., Slot>, Definitions>;
  static constexpr std::size_t index = sizeof...(Slots);
};

template <class State, class Tag, std::size_t I, class E> struct define;
template <class Slots, class... Definitions, class Tag, std::size_t I, class E> struct define<state<Slots, list<Definitions...>>, Tag, I, E> {
  using type = state<Slots, list<Definitions..., definition<Tag, I, E>>>;
};

// Where a Tag is defined, if it is.
template <class Tag, class Definitions> struct lookup {
  static constexpr bool found = false;
  static constexpr std::size_t index = 0;
  using expression = void;
};
template <class Tag, std::size_t I, class E, class... Rest> struct lookup<Tag, list<definition<Tag, I, E>, Rest...>> {
  static constexpr bool found = true;
  static constexpr std::size_t index = I;
  using expression = E;
};
template <class Tag, class Other, std::size_t I, class E, class... Rest> struct lookup<Tag, list<definition<Other, I, E>, Rest...>>
    : lookup<Tag, list<Rest...>> {};

template <std::size_t I, class Seq> struct prepend;
template <std::size_t I, std::size_t... J> struct prepend<I, std::index_sequence<J...>> {
  using type = std::index_sequence<I, J...>;
};

template <class E, class State> struct flatten;

template <class State, class... Args> struct flatten_args {
  using type = State;
  using indices = std::index_sequence<>;
};
template <class State, class A, class... Rest> struct flatten_args<State, A, Rest...> {
  using first = flatten<A, State>;
  using rest = flatten_args<typename first::type, Rest...>;
  using type = typename rest::type;
  using indices = typename prepend<first::index, typename rest::indices>::type;
};

template <class E, class State> requires is_leaf<E>::value struct flatten<E, State> {
  using pushed = push<State, LeafSlot<E>>;
  using type = typename pushed::type;
  static constexpr std::size_t index = pushed::index;
};

template <class Op, class... Args, class State> struct flatten<Node<Op, Args...>, State> {
  using args = flatten_args<State, Args...>;
  using pushed = push<typename args::type, OpSlot<Op, typename args::indices>>;
  using type = typename pushed::type;
  static constexpr std::size_t index = pushed::index;
};

template <bool Found, class Tag, class E, class State> struct flatten_shared;
template <class Tag, class E, class State> struct flatten_shared<false, Tag, E, State> {  // first use: define it
  using inner = flatten<E, State>;
  using type = typename define<typename inner::type, Tag, inner::index, E>::type;
  static constexpr std::size_t index = inner::index;
};
template <class Tag, class E, class Slots, class Definitions> struct flatten_shared<true, Tag, E, state<Slots, Definitions>> {
  // A later use reads the first use's slot, so it must name the same computation. Two different
  // expression types under one tag are a mistake the type shows (two values of one type are not: see
  // docs/autodiff.md).
  static_assert(std::is_same_v<E, typename lookup<Tag, Definitions>::expression>,
                "share<Tag>: this tag already names a different expression in this graph; give each shared value its own tag");
  using type = state<Slots, Definitions>;  // later uses: the same slot
  static constexpr std::size_t index = lookup<Tag, Definitions>::index;
};
template <class Tag, class E, class Slots, class Definitions> struct flatten<Shared<Tag, E>, state<Slots, Definitions>>
    : flatten_shared<lookup<Tag, Definitions>::found, Tag, E, state<Slots, Definitions>> {};

using empty_state = state<list<>, list<>>;
template <class E> using layout_of = typename flatten<E, empty_state>::type;
template <class State> struct slots_of;
template <class Slots, class Definitions> struct slots_of<state<Slots, Definitions>> {
  using type = Slots;
};
template <class State> struct definitions_of_state;
template <class Slots, class Definitions> struct definitions_of_state<state<Slots, Definitions>> {
  using type = Definitions;
};
// The tags defined so far in a flatten state (Tape::fill asks whether a Shared was filled already).
template <class State> using definitions_of = typename definitions_of_state<State>::type;

// The slot type (LeafSlot or OpSlot) at index I of a slot list.
template <std::size_t I, class Slots> struct slot_at_list;
template <std::size_t I, class... Slots> struct slot_at_list<I, list<Slots...>> {
  using type = std::tuple_element_t<I, std::tuple<Slots...>>;
};
template <std::size_t I, class Slots> using slot_at = typename slot_at_list<I, Slots>::type;

// ---- per-slot analysis (constexpr tables over the slot list) ----------------------------------------
template <class Slots> struct analysis;
template <class... Slots> struct analysis<list<Slots...>> {
  static constexpr std::size_t size = sizeof...(Slots);
  static constexpr std::size_t root = size - 1;

  template <std::size_t... C> static constexpr std::array<std::size_t, sizeof...(C)> children_array(std::index_sequence<C...>) {
    return {C...};
  }

  struct info {
    bool is_leaf = false;
    std::size_t arity = 0;
    std::array<std::size_t, max_op_arity> children{};
  };
  template <class Slot> static constexpr info info_of() {
    info r;
    r.is_leaf = Slot::is_leaf;
    r.arity = Slot::arity;
    const auto c = children_array(typename Slot::children{});
    for (std::size_t i = 0; i < c.size(); ++i) r.children[i] = c[i];
    return r;
  }
  static constexpr std::array<info, size> infos = {info_of<Slots>()...};

  template <class Slot> static constexpr bool leaf_needs_grad() {
    if constexpr (Slot::is_leaf) return Slot::leaf::needs_grad;
    else return false;
  }
  static constexpr std::array<bool, size> needs = [] {
    std::array<bool, size> n{};
    constexpr std::array<bool, size> leaf_needs = {leaf_needs_grad<Slots>()...};
    for (std::size_t i = 0; i < size; ++i) {
      if (infos[i].is_leaf) {
        n[i] = leaf_needs[i];
      } else {
        for (std::size_t k = 0; k < infos[i].arity; ++k) n[i] = n[i] || n[infos[i].children[k]];
      }
    }
    return n;
  }();

  // needs of slot i's inputs, as the op's Needs<arity> array.
  template <std::size_t I, std::size_t N> static constexpr Needs<N> input_needs() {
    Needs<N> r{};
    for (std::size_t k = 0; k < N; ++k) r[k] = needs[infos[I].children[k]];
    return r;
  }

  template <std::size_t I, class Slot> static constexpr Reads<max_op_arity> reads_of() {
    Reads<max_op_arity> r{};
    if constexpr (!Slot::is_leaf) {
      // An op whose output needs no gradient never runs backward, so it reads nothing.
      if (needs[I]) {
        constexpr std::size_t n = Slot::arity;
        const auto own = Slot::op::reads(input_needs<I, n>());
        for (std::size_t k = 0; k < n; ++k) r.inputs[k] = own.inputs[k];
        r.output = own.output;
      }
    }
    return r;
  }
  template <std::size_t... I> static constexpr std::array<Reads<max_op_arity>, size> all_reads(std::index_sequence<I...>) {
    return {reads_of<I, Slots>()...};
  }
  static constexpr std::array<Reads<max_op_arity>, size> reads = all_reads(std::make_index_sequence<size>{});

  // retained[i]: slot i's value must survive forward (root, or read by some backward).
  static constexpr std::array<bool, size> retained = [] {
    std::array<bool, size> keep{};
    keep[root] = true;
    for (std::size_t j = 0; j < size; ++j) {
      if (reads[j].output) keep[j] = true;
      for (std::size_t k = 0; k < infos[j].arity; ++k)
        if (reads[j].inputs[k]) keep[infos[j].children[k]] = true;
    }
    return keep;
  }();

  // last_use[i]: the last slot whose forward reads slot i (i itself when unused).
  static constexpr std::array<std::size_t, size> last_use = [] {
    std::array<std::size_t, size> last{};
    for (std::size_t i = 0; i < size; ++i) last[i] = i;
    for (std::size_t j = 0; j < size; ++j)
      for (std::size_t k = 0; k < infos[j].arity; ++k) last[infos[j].children[k]] = j;
    return last;
  }();
};

// ---- runtime records ----------------------------------------------------------------------------------
template <class Slot> struct Record;

template <class Leaf> struct Record<LeafSlot<Leaf>> {
  Leaf leaf;
  const Tensor& value() const {
    if constexpr (std::is_same_v<Leaf, Param>) return leaf.parameter->value;
    else return leaf.value;
  }
};

template <class Op, class Children> struct Record<OpSlot<Op, Children>> {
  Op op;
  Tensor value;
  Tensor grad;
  bool grad_is_view = false;  // grad is a view of an input's gradient buffer: backward has nothing to do
  Shape shape;
  DType dtype = DType::f32;
  Device device;
  const Tensor& get() const { return value; }
};

// An op may declare that, for the inputs that need a gradient, its backward is exactly
// `dx[k] += view(dy)` for one input k (a transpose; the identity: dropout in eval mode, a bias_add or
// add where only one side trains):
//   template <Needs<arity> need> int gradient_alias() const;     // k, or -1 when not (a runtime answer)
//   Tensor gradient_view(const Tensor& input_grad) const;       // input k's gradient seen as dy
// The tape then makes the op's gradient buffer that view of input k's buffer, so the ops above it add
// straight into input k's gradient, and skips the op's backward: no zero-filled buffer, no pass.
template <class Op, std::size_t N>
concept AliasesGradient = requires(const Op& op, const Tensor& g) {
  { op.template gradient_alias<Needs<N>{}>() } -> std::same_as<int>;
  { op.gradient_view(g) } -> std::same_as<Tensor>;
};

template <class Slots> struct records;
template <class... Slots> struct records<list<Slots...>> {
  using type = boost::hana::tuple<Record<Slots>...>;
};

}  // namespace tape_detail

// Bytes of activations kept alive between forward and backward (leaf tensors, which the caller owns,
// and views of them are not counted).
struct TapeMemory {
  std::size_t saved_bytes = 0;
  std::size_t saved_values = 0;
};

template <class E> class Tape {
  using layout = tape_detail::layout_of<E>;
  using slots = typename tape_detail::slots_of<layout>::type;
  using plan = tape_detail::analysis<slots>;
  using storage = typename tape_detail::records<slots>::type;
  // The slot type (LeafSlot or OpSlot) of slot I: its op, arity and children. Its record, the run-time
  // part, is tape_detail::Record<slot<I>>, reached with record<I>().
  template <std::size_t I> using slot = tape_detail::slot_at<I, slots>;

 public:
  using expression_type = E;
  static constexpr std::size_t size = plan::size;
  static constexpr std::size_t root = plan::root;
  static constexpr bool root_needs_grad = plan::needs[root];

  explicit Tape(const E& expression) {
    fill<tape_detail::empty_state>(expression);
    forward();
  }

  // The output of the expression.
  const Tensor& value() const { return value_of<root>(); }

  // Reverse walk. Without a seed the root must hold one element and its seed is 1 (a loss);
  // otherwise the seed has the root's shape (a vector-Jacobian product).
  void backward() {
    const Tensor& y = value();
    if (y.numel() != 1) fail("backward: the output has shape {}; a non-scalar output needs a seed gradient", y.shape());
    backward(Tensor::ones(y.shape(), y.dtype(), y.device()));
  }
  void backward(const Tensor& seed) {
    if constexpr (!root_needs_grad) {
      (void)seed;
      fail("backward: nothing in this expression needs a gradient (no param leaf)");
    } else {
      if (backward_done_) fail("backward: this tape's saved values were already consumed; evaluate again");
      const Tensor& y = value();
      if (seed.shape() != y.shape() || seed.dtype() != y.dtype() || seed.device() != y.device())
        fail("backward: seed {} {} on {} does not match output {} {} on {}", seed.shape(), seed.dtype(), seed.device(),
             y.shape(), y.dtype(), y.device());
      auto& r = record<root>();
      if constexpr (is_leaf_slot<root>) {
        accumulate(r.leaf.parameter->grad, seed);
      } else {
        r.grad = seed.clone();
        backward_slots(std::make_index_sequence<size>{});
      }
      backward_done_ = true;
    }
  }

  TapeMemory memory() const {
    TapeMemory m;
    count_saved(m, std::make_index_sequence<size>{});
    return m;
  }

  // Compile-time facts, for tests and docs.
  static constexpr bool slot_needs_grad(std::size_t i) { return plan::needs[i]; }
  static constexpr bool slot_retained(std::size_t i) { return plan::retained[i]; }

 private:

  template <std::size_t I> auto& record() { return boost::hana::at_c<I>(records_); }
  template <std::size_t I> const auto& record() const { return boost::hana::at_c<I>(records_); }
  template <std::size_t I> static constexpr bool is_leaf_slot = plan::infos[I].is_leaf;

  template <std::size_t I> const Tensor& value_of() const {
    if constexpr (is_leaf_slot<I>) return record<I>().value();
    else return record<I>().value;
  }

  // Fill the records by walking the expression in the same order as tape_detail::flatten: arguments
  // left to right, a node after its arguments, a shared expression only at its first use. State is the
  // flatten state before x, so flatten<X, State>::index is x's slot.
  template <class State, class X> void fill(const X& x) {
    using flat = tape_detail::flatten<X, State>;
    if constexpr (is_leaf<X>::value) {
      record<flat::index>().leaf = x;
    } else if constexpr (is_shared<X>::value) {
      if constexpr (!tape_detail::lookup<typename X::tag, tape_detail::definitions_of<State>>::found) fill<State>(x.expression);
    } else {
      fill_args<State, 0>(x.args);
      record<flat::index>().op = x.op;
    }
  }
  template <class State, std::size_t K, class Tuple> void fill_args(const Tuple& args) {
    if constexpr (K < std::tuple_size_v<Tuple>) {
      using A = std::tuple_element_t<K, Tuple>;
      fill<State>(std::get<K>(args));
      fill_args<typename tape_detail::flatten<A, State>::type, K + 1>(args);
    }
  }

  void forward() { forward_slots(std::make_index_sequence<size>{}); }
  template <std::size_t... I> void forward_slots(std::index_sequence<I...>) { (forward_slot<I>(), ...); }

  template <std::size_t I> void forward_slot() {
    if constexpr (!is_leaf_slot<I>) {
      auto& r = record<I>();
      r.value = call_forward<I>(r.op, typename slot<I>::children{});
      r.shape = r.value.shape();
      r.dtype = r.value.dtype();
      r.device = r.value.device();
      if (anomaly_mode_enabled()) check_finite(r.value, slot<I>::op::name, I, false, "forward output");
      release_after<I>(std::make_index_sequence<size>{});
    }
  }
  template <std::size_t I, class Op, std::size_t... C> Tensor call_forward(Op& op, std::index_sequence<C...>) {
    return op.forward(forward_argument<C, I>()...);
  }
  // An input that dies at this op (an intermediate, no backward reads it, this is its last use and it
  // appears once among the op's inputs) is moved out of its record and handed over as a temporary. If no
  // other view shares its storage (use_count() == 1), the op may write its output into that buffer:
  // this is how `y = base + s·(u·Aᵀ)·Bᵀ` accumulates into base's buffer with a beta = 1 GEMM. Ops opt in
  // by taking that input by value: an lvalue argument is copied (a second handle: no reuse).
  template <std::size_t C, std::size_t I> decltype(auto) forward_argument() {
    if constexpr (dies_at<C, I>()) {
      return Tensor(std::move(record<C>().value));
    } else {
      return static_cast<const Tensor&>(value_of<C>());
    }
  }
  template <std::size_t C, std::size_t I> static constexpr bool dies_at() {
    if constexpr (is_leaf_slot<C>) {
      return false;
    } else {
      std::size_t uses = 0;
      for (std::size_t k = 0; k < plan::infos[I].arity; ++k) uses += plan::infos[I].children[k] == C;
      return uses == 1 && plan::last_use[C] == I && !plan::retained[C];
    }
  }
  // Release every value whose last forward use was slot J and that no backward reads.
  template <std::size_t J, std::size_t... I> void release_after(std::index_sequence<I...>) {
    ((release_if<I, J>()), ...);
  }
  template <std::size_t I, std::size_t J> void release_if() {
    if constexpr (!is_leaf_slot<I> && plan::last_use[I] == J && !plan::retained[I] && I != J) record<I>().value = Tensor();
  }

  // Reverse topological order: slot size-1 first. (A comma fold runs left to right.)
  template <std::size_t... I> void backward_slots(std::index_sequence<I...>) { (backward_slot<size - 1 - I>(), ...); }

  template <std::size_t I> void backward_slot() {
    if constexpr (!is_leaf_slot<I> && plan::needs[I]) {
      auto& r = record<I>();
      if (!r.grad.defined()) return;  // no gradient reached this slot
      if (!r.grad_is_view) {  // a view's contributions are already in its input's gradient
        call_backward<I>(r, typename slot<I>::children{});
        if (anomaly_mode_enabled()) check_gradients<I>(typename slot<I>::children{});
      }
      r.grad = Tensor();
      r.grad_is_view = false;
      if (I != root) r.value = Tensor();
    }
  }

  template <std::size_t I, class R, std::size_t... C> void call_backward(R& r, std::index_sequence<C...>) {
    constexpr std::size_t n = sizeof...(C);
    constexpr Needs<n> need = plan::template input_needs<I, n>();
    Inputs<n> inputs = {input_pointer<C>()...};
    Grads<n> grads = {grad_pointer<C>()...};
    r.op.template backward<need>(r.grad, inputs, r.value, grads);
  }
  // After slot I's backward: every gradient it added to must be finite.
  template <std::size_t I, std::size_t... C> void check_gradients(std::index_sequence<C...>) {
    std::size_t k = 0;
    auto check = [&](const Tensor* g) {
      if (g) check_finite(*g, slot<I>::op::name, I, true, fmt::format("gradient of input {}", k));
      ++k;
    };
    (check(grad_pointer<C>()), ...);
  }

  template <std::size_t C> const Tensor* input_pointer() const {
    const Tensor& v = value_of<C>();
    return v.defined() ? &v : nullptr;
  }
  // The gradient buffer of slot C, created (zero) on first use; null when C needs no gradient.
  template <std::size_t C> Tensor* grad_pointer() {
    if constexpr (!plan::needs[C]) {
      return nullptr;
    } else if constexpr (is_leaf_slot<C>) {
      return &record<C>().leaf.parameter->grad;
    } else {
      auto& r = record<C>();
      if (!r.grad.defined() && !alias_gradient<C>(r)) r.grad = Tensor::zeros(r.shape, r.dtype, r.device);
      return &r.grad;
    }
  }
  // Makes slot C's new gradient buffer a view of one input's buffer when its op allows (see
  // AliasesGradient); false when it does not.
  template <std::size_t C, class R> bool alias_gradient(R& r) {
    using Op = typename slot<C>::op;
    constexpr std::size_t n = slot<C>::arity;
    if constexpr (tape_detail::AliasesGradient<Op, n>) {
      const int k = r.op.template gradient_alias<plan::template input_needs<C, n>()>();
      if (k < 0) return false;
      Tensor* input_grad = child_grad_pointer(k, typename slot<C>::children{});
      if (!input_grad) return false;
      Tensor view = r.op.gradient_view(*input_grad);
      if (view.shape() != r.shape)
        fail("backward: {} gradient view has shape {}, its output {}", Op::name, view.shape(), r.shape);
      r.grad = std::move(view);
      r.grad_is_view = true;
      return true;
    } else {
      (void)r;
      return false;
    }
  }
  // grad_pointer of the k-th child (runtime k).
  template <std::size_t... Children> Tensor* child_grad_pointer(int k, std::index_sequence<Children...>) {
    Tensor* found = nullptr;
    int position = 0;
    ((position++ == k ? (found = grad_pointer<Children>(), 0) : 0), ...);
    return found;
  }

  static void accumulate(Tensor& into, const Tensor& g) { map("backward", functors::Add{}, into, into, g); }

  template <std::size_t... I> void count_saved(TapeMemory& m, std::index_sequence<I...>) const {
    std::vector<const Storage*> leaves, seen;
    (collect_leaf<I>(leaves), ...);
    (count_value<I>(m, leaves, seen), ...);
  }
  template <std::size_t I> void collect_leaf(std::vector<const Storage*>& leaves) const {
    if constexpr (is_leaf_slot<I>) {
      const Tensor& v = value_of<I>();
      if (v.defined()) leaves.push_back(v.storage().get());
    }
  }
  template <std::size_t I>
  void count_value(TapeMemory& m, const std::vector<const Storage*>& leaves, std::vector<const Storage*>& seen) const {
    if constexpr (!is_leaf_slot<I>) {
      const Tensor& v = record<I>().value;
      if (!v.defined() || I == root) return;
      const Storage* s = v.storage().get();
      for (auto* l : leaves)
        if (l == s) return;
      for (auto* x : seen)
        if (x == s) return;
      seen.push_back(s);
      m.saved_bytes += s->bytes();
      ++m.saved_values;
    }
  }

  storage records_;
  bool backward_done_ = false;
};

// Forward: flatten the expression into a typed tape and run it.
template <Expression E> Tape<std::decay_t<E>> eval(E&& expression) { return Tape<std::decay_t<E>>(expression); }

template <class E> void backward(Tape<E>& tape) { tape.backward(); }
template <class E> void backward(Tape<E>& tape, const Tensor& seed) { tape.backward(seed); }

}  // namespace lowrank
