#pragma once
// The three kinds of leaf. Whether a node needs a gradient is a compile-time trait derived bottom-up
// from these: `input` and `frozen` never, `param` always, an op when any of its inputs does.
#include <type_traits>
#include <utility>

#include "lowrank/autodiff/parameter.hpp"
#include "lowrank/ops/op.hpp"

namespace lowrank {

// Data: never a gradient.
struct Input {
  static constexpr bool needs_grad = false;
  static constexpr const char* kind = "input";
  Tensor value;
};

// A pretrained weight: never a gradient and never a gradient buffer.
struct Frozen {
  static constexpr bool needs_grad = false;
  static constexpr const char* kind = "frozen";
  Tensor value;
};

// A trainable parameter: backward accumulates into parameter->grad.
struct Param {
  static constexpr bool needs_grad = true;
  static constexpr const char* kind = "param";
  ParameterPtr parameter;
};

inline Input input(Tensor t) { return {std::move(t)}; }
inline Frozen frozen(Tensor t) { return {std::move(t)}; }
inline Param param(ParameterPtr p) {
  if (!p) fail("param: null parameter");
  return {std::move(p)};
}

// A subexpression used more than once: `share<Tag>(e)` names it, and every use of the same Tag is one
// tape slot, computed once, whose gradient accumulates over its uses. Tags are types, so they must be
// distinct per block: a helper that shares must take the tag (or a block index) as a template parameter.
template <class Tag, class E> struct Shared {
  using tag = Tag;
  E expression;
};
template <class Tag, Expression E> Shared<Tag, std::decay_t<E>> share(E&& e) { return {std::forward<E>(e)}; }

template <> struct is_expression<Input> : std::true_type {};
template <> struct is_expression<Frozen> : std::true_type {};
template <> struct is_expression<Param> : std::true_type {};
template <class Tag, class E> struct is_expression<Shared<Tag, E>> : std::true_type {};

template <class E> struct is_leaf : std::false_type {};
template <> struct is_leaf<Input> : std::true_type {};
template <> struct is_leaf<Frozen> : std::true_type {};
template <> struct is_leaf<Param> : std::true_type {};

template <class E> struct is_shared : std::false_type {};
template <class Tag, class E> struct is_shared<Shared<Tag, E>> : std::true_type {};

// An expression a module may read more than once: a leaf or a share<Tag>(...) is one tape slot however
// often it appears; any other expression would be copied and computed once per read.
template <class X> inline constexpr bool usable_twice = is_leaf<std::decay_t<X>>::value || is_shared<std::decay_t<X>>::value;

// needs_grad<E>: computed bottom-up at compile time.
template <class E> struct needs_grad_trait;
template <class E> inline constexpr bool needs_grad = needs_grad_trait<std::decay_t<E>>::value;
template <class E> requires is_leaf<E>::value struct needs_grad_trait<E> : std::bool_constant<E::needs_grad> {};
template <class Op, class... Args> struct needs_grad_trait<Node<Op, Args...>> : std::bool_constant<(needs_grad<Args> || ...)> {};
template <class Tag, class E> struct needs_grad_trait<Shared<Tag, E>> : std::bool_constant<needs_grad<E>> {};

}  // namespace lowrank
