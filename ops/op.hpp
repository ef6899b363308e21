#pragma once
// The op contract and the expression node. An op is a small struct with a name, an arity, a forward
// that computes its output from input tensors, a `reads` rule that says which values its backward needs
// given which inputs need a gradient, and a backward that ADDS into the input gradients it is given.
// `Node<Op, Args...>` is an expression: an op and its argument expressions. Nodes are plain values;
// the autodiff layer turns an expression into a typed tape. (ops/ knows nothing of tapes.)
#include <array>
#include <concepts>
#include <cstddef>
#include <string_view>
#include <tuple>
#include <type_traits>
#include <utility>

#include "lowrank/core/tensor.hpp"

namespace lowrank {

template <std::size_t N> using Needs = std::array<bool, N>;              // needs[i]: input i needs a gradient
template <std::size_t N> using Inputs = std::array<const Tensor*, N>;    // forward inputs (null when released)
template <std::size_t N> using Grads = std::array<Tensor*, N>;           // gradient buffers (null when not needed)

// What an op's backward reads. Values nobody reads are released right after their last forward use:
// this is the compile-time memory plan (a frozen W's matmul does not keep its input alive for dW).
template <std::size_t N> struct Reads {
  std::array<bool, N> inputs{};
  bool output = false;
};

// An op that takes an input by value may write its output into that input's buffer when the handle it
// received is the only one (the tape hands over inputs that die at the op; any caller's lvalue argument
// is copied into the parameter, so a caller's tensor is never overwritten).
inline bool sole_owner(const Tensor& t) { return t.defined() && t.storage().use_count() == 1 && t.is_contiguous(); }

// The most inputs one op may take. The tape's compile-time tables (autodiff/tape.hpp) hold an op's
// children and reads in arrays of this size; an op with more inputs is refused where its node is made.
inline constexpr std::size_t max_op_arity = 8;

// The op contract. What the compiler checks, and where:
//   OpType (on make_node and Node): `Op::name` converts to std::string_view, `Op::arity` to std::size_t,
//     and `Op::reads(Needs<arity>)` is a static function returning exactly Reads<arity>;
//   Node: the arity is at most max_op_arity and the node has exactly `arity` arguments;
//   the tape (autodiff/tape.hpp), when it instantiates them: `forward` accepts the input tensors in
//     order and returns something a Tensor is made from; `backward<need>(dy, Inputs<arity>,
//     output, Grads<arity>)` exists for each `need` the graph asks for; the optional gradient view
//     (`gradient_alias`, `gradient_view`) has the signature tape_detail::AliasesGradient names.
// What it cannot check stays the op author's promise, and the op's gradcheck test is what catches a
// break: backward ADDS into the gradient buffers it is given (never assigns), reads only what `reads`
// declared (anything else may already be released), and leaves its inputs unchanged.
template <class Op>
concept OpType = requires {
  { Op::name } -> std::convertible_to<std::string_view>;
  { Op::arity } -> std::convertible_to<std::size_t>;
  { Op::reads(Needs<Op::arity>{}) } -> std::same_as<Reads<Op::arity>>;
};

template <OpType Op, class... Args> struct Node {
  static_assert(Op::arity <= max_op_arity, "an op takes at most max_op_arity (8) inputs (ops/op.hpp)");
  static_assert(sizeof...(Args) == Op::arity, "an op node needs exactly Op::arity arguments");
  Op op;
  std::tuple<Args...> args;
};

template <OpType Op, class... Args> Node<Op, std::decay_t<Args>...> make_node(Op op, Args&&... args) {
  return {std::move(op), {std::forward<Args>(args)...}};
}

// Every expression type (leaves and nodes) derives its ability to appear in a graph from this marker;
// builders accept only expressions.
template <class E> struct is_expression : std::false_type {};
template <class Op, class... Args> struct is_expression<Node<Op, Args...>> : std::true_type {};
template <class E> concept Expression = is_expression<std::decay_t<E>>::value;

}  // namespace lowrank
