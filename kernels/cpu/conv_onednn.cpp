// The oneDNN route of the float convolutions (see conv_onednn.h).
#include "kernels/cpu/conv_onednn.h"

#include <stdexcept>

#if EQUIVAE_HAVE_ONEDNN
#include <algorithm>
#include <array>
#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <oneapi/dnnl/dnnl.hpp>
#include <optional>
#include <string>
#include <tuple>
#include <unordered_map>
#include <variant>
#include <vector>

#include "kernels/cpu/onednn_common.h"

namespace equivae::cpu::onednn {
namespace {

using dnnl::algorithm;
using dnnl::memory;
using dnnl::prop_kind;
using tag = memory::format_tag;

// Images per oneDNN call: each call reorders its whole batch through the workspace, so a larger
// batch (the semi-supervised decoder's B + C·U = 1,160 rows) is cut into near-equal chunks of
// at most this many, which keeps the workspace bounded.
constexpr int kMaxImages = 512;

constexpr size_t kAlign = 64;  // oneDNN's kernels expect cache-line aligned buffers
size_t round_up(size_t bytes) {
  return (bytes + kAlign - 1) / kAlign * kAlign;
}

// The blocked layout's block, read off the layout oneDNN's forward convolution picks for a
// 32-channel output on this CPU (0: neither 16 nor 8 channels, or no fast kernel).
int probe_channel_block() {
  const auto f32 = memory::data_type::f32;
  const memory::dims image{1, 32, 8, 8}, weights{32, 32, 3, 3};
  try {
    const auto pd = fast(dnnl::convolution_forward::primitive_desc(
        dnnl::convolution_forward::desc(prop_kind::forward_training, algorithm::convolution_direct,
                                        memory::desc(image, f32, tag::any),
                                        memory::desc(weights, f32, tag::any),
                                        memory::desc(image, f32, tag::any), {1, 1}, {1, 1}, {1, 1}),
        engine()));
    for (const auto& [block, blocked] : {std::pair{16, tag::aBcd16b}, std::pair{8, tag::aBcd8b}})
      if (pd.dst_desc() == memory::desc(image, f32, blocked)) return block;
  } catch (const dnnl::error&) {
  } catch (const ReferenceOnly&) {
  }
  return 0;
}
tag blocked_tag() {
  return channel_block() == 8 ? tag::aBcd8b : tag::aBcd16b;
}

// Right padding that makes oneDNN's size formula give exactly the engine's output size: for a
// conv, (Ho − 1)·stride + K − H − pad (≤ pad; below it when the floor in Ho drops pixels); for
// the transpose, pad − output_padding. Negative: oneDNN cannot take the shape.
std::array<int, 2> right_padding(const Conv2dShape& s, bool transposed) {
  if (transposed) return {s.pad - s.output_padding, s.pad - s.output_padding};
  const int Ho = conv2d_out_size(s.H, s.KH, s.stride, s.pad);
  const int Wo = conv2d_out_size(s.W, s.KW, s.stride, s.pad);
  return {(Ho - 1) * s.stride + s.KH - s.H - s.pad, (Wo - 1) * s.stride + s.KW - s.W - s.pad};
}

// One operand of a primitive: the NCHW (or OIHW / IOHW) layout the engine holds, the layout the
// primitive wants, and the reorders between them when the two differ.
struct Operand {
  memory::desc plain, inner;
  std::optional<dnnl::reorder> to_inner, to_plain;

  Operand(const memory::desc& plain_, const memory::desc& inner_, bool input)
      : plain(plain_), inner(inner_) {
    if (plain == inner) return;
    if (input)
      to_inner = dnnl::reorder(dnnl::reorder::primitive_desc(engine(), plain, engine(), inner));
    else
      to_plain = dnnl::reorder(dnnl::reorder::primitive_desc(engine(), inner, engine(), plain));
  }
  size_t workspace() const { return plain == inner ? 0 : round_up(inner.get_size()); }
  // The operand in the primitive's layout at `at` (workspace()'s bytes), from the caller's
  // `user` when it is an input.
  memory in_inner(dnnl::stream& stream, void* user, void* at) const {
    memory in(inner, engine(), at);
    if (to_inner) {
      memory from(plain, engine(), user);
      to_inner->execute(stream, from, in);
    }
    return in;
  }
};

// A primitive, its operands and the scratchpad it needs.
struct Call {
  std::variant<dnnl::convolution_forward, dnnl::convolution_backward_data,
               dnnl::convolution_backward_weights, dnnl::deconvolution_forward,
               dnnl::deconvolution_backward_data, dnnl::deconvolution_backward_weights>
      primitive;
  std::vector<std::pair<int, Operand>> operands;  // (DNNL_ARG_*, operand); outputs last
  memory::desc scratchpad;
  int bias_channels = 0;    // the bias length (C_out), for the forward
  bool relu_after = false;  // y = max(y, 0) on the NCHW result (NaN kept, as in dense_forward)

  size_t workspace() const {
    size_t bytes = round_up(scratchpad.get_size());
    for (const auto& [arg, op] : operands) bytes += op.workspace();
    return bytes;
  }

  // Runs the primitive on the caller's NCHW pointers (same order as operands), reordering in
  // and out through the workspace. inner_given: the index of an input operand whose pointer
  // already holds it in the primitive's layout (not reordered), or −1.
  void run(const std::vector<void*>& pointers, void* workspace_, const float* bias,
           int inner_given = -1) const {
    dnnl::stream stream(engine());
    char* ws = static_cast<char*>(workspace_);
    std::unordered_map<int, memory> args;
    std::vector<std::pair<const Operand*, std::pair<memory, memory>>> outputs;
    for (size_t i = 0; i < operands.size(); ++i) {
      const auto& [arg, op] = operands[i];
      if (int(i) == inner_given) {
        args.emplace(arg, memory(op.inner, engine(), pointers[i]));
        continue;
      }
      memory user(op.plain, engine(), pointers[i]);
      if (op.plain == op.inner) {
        args.emplace(arg, user);
        continue;
      }
      const memory inner = op.in_inner(stream, pointers[i], ws);
      ws += op.workspace();
      if (op.to_plain) outputs.push_back({&op, {inner, user}});
      args.emplace(arg, inner);
    }
    if (bias) {
      const memory::desc b({memory::dim(bias_channels)}, memory::data_type::f32, tag::x);
      args.emplace(DNNL_ARG_BIAS, memory(b, engine(), const_cast<float*>(bias)));
    }
    if (scratchpad.get_size()) args.emplace(DNNL_ARG_SCRATCHPAD, memory(scratchpad, engine(), ws));
    std::visit([&](const auto& p) { p.execute(stream, args); }, primitive);
    for (auto& [op, mems] : outputs) op->to_plain->execute(stream, mems.first, mems.second);
    stream.wait();
    if (relu_after) {
      float* y = static_cast<float*>(pointers.back());
      const size_t n = operands.back().second.plain.get_size() / sizeof(float);
#pragma omp parallel for simd schedule(static) if (n > 65536)
      for (size_t i = 0; i < n; ++i) y[i] = y[i] < 0.0f ? 0.0f : y[i];
    }
  }
};

// The shape's primitives, created once: the forward with and without bias / ReLU, and the two
// backward ones. Not usable when oneDNN refused the shape or offered only its reference
// implementations (plain loops, far slower than im2col: a CPU without AVX2, say).
struct Plan {
  bool usable = false;
  std::unique_ptr<Call> forward[2][2];  // [bias][relu]
  std::unique_ptr<Call> backward_data, backward_weights;
  // Where both backward primitives read dy in one layout other than the caller's, backward()
  // reorders it once for the two: its bytes at the head of the calls' workspace (else 0). The
  // calls then skip their own dy reorder, whose room in their workspace it takes.
  size_t shared_dy = 0;
  size_t workspace = 0;
};
// The operand index of dy in the backward calls (make_plan's fill_backward order).
constexpr int kDataDy = 0, kWeightsDy = 1;

Plan make_plan(const Conv2dShape& s, bool transposed) {
  // A blocked side must fill its blocks exactly: the caller's buffer holds N·C·H·W values.
  const int block = channel_block();
  if ((s.x_blocked && (block == 0 || s.C_in % block != 0)) ||
      (s.y_blocked && (block == 0 || s.C_out % block != 0)))
    return Plan{};
  const auto f32 = memory::data_type::f32;
  const int Ho = conv_out_h(s, transposed), Wo = conv_out_w(s, transposed);
  const memory::dims src{s.N, s.C_in, s.H, s.W}, dst{s.N, s.C_out, Ho, Wo},
      weights{s.C_out, s.C_in, s.KH, s.KW}, bias{s.C_out}, strides{s.stride, s.stride},
      left{s.pad, s.pad};
  const auto right_pad = right_padding(s, transposed);
  const memory::dims right{right_pad[0], right_pad[1]};
  // What the caller holds: NCHW, or channel blocks where the shape says so.
  const memory::desc src_plain(src, f32, s.x_blocked ? blocked_tag() : tag::nchw),
      dst_plain(dst, f32, s.y_blocked ? blocked_tag() : tag::nchw),
      weights_plain(weights, f32, transposed ? tag::iohw : tag::oihw), bias_md(bias, f32, tag::x);
  // A side with few channels stays NCHW: blocked layouts pad channels to 16 (3 → 16 for
  // RGB images), and oneDNN's kernels read a narrow NCHW side directly.
  const auto layout = [](int channels) { return channels < 16 ? tag::nchw : tag::any; };
  const memory::desc src_any(src, f32, layout(s.C_in)), dst_any(dst, f32, layout(s.C_out)),
      weights_any(weights, f32, tag::any);
  // make(src, dst) → a primitive descriptor. Blocked sides are given as they are, so that
  // nothing reorders them; where oneDNN has no fast primitive for that (the data gradient into
  // 3 channels from a blocked dy: only its reference loops), the primitive chooses its layouts
  // and the blocked sides are reordered like NCHW ones (Operand).
  const auto fast_for_layouts = [&](const auto& make) {
    if (s.x_blocked || s.y_blocked) try {
        return fast(make(s.x_blocked ? src_plain : src_any, s.y_blocked ? dst_plain : dst_any));
      } catch (const dnnl::error&) {
      } catch (const ReferenceOnly&) {
      }
    return fast(make(src_any, dst_any));
  };
  dnnl::primitive_attr user_scratchpad;
  user_scratchpad.set_scratchpad_mode(dnnl::scratchpad_mode::user);

  Plan plan;
  const auto algo = transposed ? algorithm::deconvolution_direct : algorithm::convolution_direct;
  // The backward primitives take the plain forward (no bias, no ReLU) as their hint.
  std::optional<dnnl::convolution_forward::primitive_desc> conv_hint;
  std::optional<dnnl::deconvolution_forward::primitive_desc> deconv_hint;
  for (int with_bias = 0; with_bias < 2; ++with_bias)
    for (int relu = 0; relu < 2; ++relu) {
      dnnl::primitive_attr attr;
      attr.set_scratchpad_mode(dnnl::scratchpad_mode::user);
      // The transpose's ReLU is a pass of its own (Call::relu_after): oneDNN 2.6 runs a
      // deconvolution with a ReLU post-op 4× slower than without (27 vs 7 ms at 128 → 64).
      if (relu && !transposed) {
        dnnl::post_ops ops;
        ops.append_eltwise(1.0f, algorithm::eltwise_relu, 0.0f, 0.0f);
        attr.set_post_ops(ops);
      }
      auto call = std::make_unique<Call>();
      const auto fill = [&](const auto& pd) {
        call->operands.emplace_back(DNNL_ARG_SRC, Operand(src_plain, pd.src_desc(), true));
        call->operands.emplace_back(DNNL_ARG_WEIGHTS,
                                    Operand(weights_plain, pd.weights_desc(), true));
        call->operands.emplace_back(DNNL_ARG_DST, Operand(dst_plain, pd.dst_desc(), false));
        call->scratchpad = pd.scratchpad_desc();
        call->bias_channels = s.C_out;
        call->relu_after = relu && transposed;
      };
      const auto make_forward = [&]<class Op>(auto& hint) {
        const auto pd = fast_for_layouts([&](const memory::desc& x, const memory::desc& y) {
          const auto desc = with_bias
                                ? typename Op::desc(prop_kind::forward_training, algo, x,
                                                    weights_any, bias_md, y, strides, left, right)
                                : typename Op::desc(prop_kind::forward_training, algo, x,
                                                    weights_any, y, strides, left, right);
          return typename Op::primitive_desc(desc, attr, engine());
        });
        if (!with_bias && !relu) hint = pd;
        fill(pd);
        call->primitive = Op(pd);
      };
      if (transposed)
        make_forward.template operator()<dnnl::deconvolution_forward>(deconv_hint);
      else
        make_forward.template operator()<dnnl::convolution_forward>(conv_hint);
      plan.forward[with_bias][relu] = std::move(call);
    }

  // Backward data: dy (input) and W → dx (output). Backward weights: x and dy → dW.
  plan.backward_data = std::make_unique<Call>();
  plan.backward_weights = std::make_unique<Call>();
  const auto fill_backward = [&](const auto& data_pd, const auto& weights_pd) {
    Call& d = *plan.backward_data;
    d.operands.emplace_back(DNNL_ARG_DIFF_DST, Operand(dst_plain, data_pd.diff_dst_desc(), true));
    d.operands.emplace_back(DNNL_ARG_WEIGHTS, Operand(weights_plain, data_pd.weights_desc(), true));
    d.operands.emplace_back(DNNL_ARG_DIFF_SRC, Operand(src_plain, data_pd.diff_src_desc(), false));
    d.scratchpad = data_pd.scratchpad_desc();
    Call& w = *plan.backward_weights;
    w.operands.emplace_back(DNNL_ARG_SRC, Operand(src_plain, weights_pd.src_desc(), true));
    w.operands.emplace_back(DNNL_ARG_DIFF_DST,
                            Operand(dst_plain, weights_pd.diff_dst_desc(), true));
    w.operands.emplace_back(DNNL_ARG_DIFF_WEIGHTS,
                            Operand(weights_plain, weights_pd.diff_weights_desc(), false));
    w.scratchpad = weights_pd.scratchpad_desc();
  };
  const auto make_backward = [&]<class Data, class Weights>(const auto& hint) {
    const auto data_pd = fast_for_layouts([&](const memory::desc& x, const memory::desc& y) {
      return typename Data::primitive_desc(
          typename Data::desc(algo, x, weights_any, y, strides, left, right), user_scratchpad,
          engine(), hint);
    });
    const auto weights_pd = fast_for_layouts([&](const memory::desc& x, const memory::desc& y) {
      return typename Weights::primitive_desc(
          typename Weights::desc(algo, x, weights_any, y, strides, left, right), user_scratchpad,
          engine(), hint);
    });
    fill_backward(data_pd, weights_pd);
    plan.backward_data->primitive = Data(data_pd);
    plan.backward_weights->primitive = Weights(weights_pd);
  };
  if (transposed)
    make_backward.template operator()<dnnl::deconvolution_backward_data,
                                      dnnl::deconvolution_backward_weights>(*deconv_hint);
  else
    make_backward.template
    operator()<dnnl::convolution_backward_data, dnnl::convolution_backward_weights>(*conv_hint);

  for (const auto& by_bias : plan.forward)
    for (const auto& call : by_bias) plan.workspace = std::max(plan.workspace, call->workspace());
  plan.workspace = std::max(
      {plan.workspace, plan.backward_data->workspace(), plan.backward_weights->workspace()});
  const Operand& data_dy = plan.backward_data->operands[kDataDy].second;
  const Operand& weights_dy = plan.backward_weights->operands[kWeightsDy].second;
  if (data_dy.plain != data_dy.inner && data_dy.inner == weights_dy.inner)
    plan.shared_dy = data_dy.workspace();
  plan.workspace += kAlign;  // room to align the caller's pointer
  plan.usable = true;
  return plan;
}

using Key = std::tuple<int, int, int, int, int, int, int, int, int, int, bool, bool, bool>;

// The process's plans, created on first use (primitive creation JIT-compiles the kernels).
const Plan& plan_for(const Conv2dShape& s, bool transposed) {
  static std::mutex mutex;
  static std::map<Key, std::unique_ptr<Plan>> plans;
  const Key key{s.N,   s.C_in,           s.H,        s.W,         s.C_out,    s.KH, s.KW, s.stride,
                s.pad, s.output_padding, transposed, s.x_blocked, s.y_blocked};
  std::lock_guard lock(mutex);
  auto& plan = plans[key];
  if (!plan) try {
      plan = std::make_unique<Plan>(make_plan(s, transposed));
    } catch (const dnnl::error&) {  // a shape no implementation takes: the im2col route's
      plan = std::make_unique<Plan>();
    } catch (const ReferenceOnly&) {
      plan = std::make_unique<Plan>();
    }
  return *plan;
}

void* aligned(void* workspace) {
  const auto at = reinterpret_cast<std::uintptr_t>(workspace);
  return reinterpret_cast<void*>((at + kAlign - 1) / kAlign * kAlign);
}

// The chunks of a batch: `count` calls of `size` images, the last one possibly fewer — at most
// two shapes, fixed by N.
struct Chunks {
  int count, size;
  explicit Chunks(int N)
      : count((N + kMaxImages - 1) / kMaxImages), size((N + count - 1) / count) {}
  int last(int N) const { return N - (count - 1) * size; }
};
Conv2dShape with_images(Conv2dShape s, int n) {
  s.N = n;
  return s;
}
// f(first image, chunk shape) for each chunk in order.
template <class F>
void for_each_chunk(const Conv2dShape& s, F&& f) {
  const Chunks chunks(s.N);
  for (int n0 = 0; n0 < s.N; n0 += chunks.size)
    f(n0, with_images(s, std::min(chunks.size, s.N - n0)));
}
size_t weight_bytes(const Conv2dShape& s) {
  return round_up(sizeof(float) * s.C_out * s.C_in * s.KH * s.KW);
}
size_t image_elements(const Conv2dShape& s, bool transposed, bool output) {
  return output ? size_t(s.C_out) * conv_out_h(s, transposed) * conv_out_w(s, transposed)
                : size_t(s.C_in) * s.H * s.W;
}

}  // namespace

bool available() {
  return true;
}

int channel_block() {
  static const int block = probe_channel_block();
  return block;
}

bool supports(const Conv2dShape& s, bool transposed) {
  const auto right = right_padding(s, transposed);
  if (right[0] < 0 || right[1] < 0) return false;
  const Chunks chunks(s.N);
  return plan_for(with_images(s, chunks.size), transposed).usable &&
         plan_for(with_images(s, chunks.last(s.N)), transposed).usable;
}

size_t workspace_bytes(const Conv2dShape& s, bool transposed) {
  if (!supports(s, transposed)) return 0;
  const Chunks chunks(s.N);
  const size_t calls = std::max(plan_for(with_images(s, chunks.size), transposed).workspace,
                                plan_for(with_images(s, chunks.last(s.N)), transposed).workspace);
  // With several chunks, the later ones' weight gradients go to a buffer first (then added).
  return calls + (chunks.count > 1 ? weight_bytes(s) : 0);
}

void forward(float* y, const float* x, const float* W, const float* b, const Conv2dShape& s,
             bool transposed, bool relu, void* workspace) {
  const size_t in = image_elements(s, transposed, false), out = image_elements(s, transposed, true);
  for_each_chunk(s, [&](int n0, const Conv2dShape& chunk) {
    plan_for(chunk, transposed)
        .forward[b != nullptr][relu]
        ->run({const_cast<float*>(x + n0 * in), const_cast<float*>(W), y + n0 * out},
              aligned(workspace), b);
  });
}

void backward(float* dx, float* dW, const float* x, const float* dy, const float* W,
              const Conv2dShape& s, bool transposed, void* workspace) {
  const size_t in = image_elements(s, transposed, false), out = image_elements(s, transposed, true);
  const size_t weights = size_t(s.C_out) * s.C_in * s.KH * s.KW;
  // With several chunks, those after the first put their weight gradient at the head of the
  // workspace, added to dW in chunk order (an order fixed by N); then dy in the primitives'
  // layout when both gradients read it (Plan::shared_dy); then the calls' own scratch.
  float* part = static_cast<float*>(aligned(workspace));
  char* after_part = reinterpret_cast<char*>(part) + (Chunks(s.N).count > 1 ? weight_bytes(s) : 0);
  for_each_chunk(s, [&](int n0, const Conv2dShape& chunk) {
    const Plan& plan = plan_for(chunk, transposed);
    void* dy_at = const_cast<float*>(dy + n0 * out);
    char* scratch = after_part;
    const bool shared = dx && dW && plan.shared_dy > 0;
    if (shared) {
      dnnl::stream stream(engine());
      plan.backward_data->operands[kDataDy].second.in_inner(stream, dy_at, scratch);
      stream.wait();
      dy_at = scratch;
      scratch += plan.shared_dy;
    }
    if (dW) {
      const bool first = n0 == 0;
      plan.backward_weights->run({const_cast<float*>(x + n0 * in), dy_at, first ? dW : part},
                                 scratch, nullptr, shared ? kWeightsDy : -1);
      if (!first)
#pragma omp parallel for simd schedule(static) if (weights > 65536)
        for (size_t i = 0; i < weights; ++i) dW[i] += part[i];
    }
    if (dx)
      plan.backward_data->run({dy_at, const_cast<float*>(W), dx + n0 * in}, scratch, nullptr,
                              shared ? kDataDy : -1);
  });
}

}  // namespace equivae::cpu::onednn

#else  // no oneDNN at build time

namespace equivae::cpu::onednn {
namespace {
[[noreturn]] void missing() {
  throw std::logic_error("the oneDNN convolution route was not built (libdnnl-dev missing)");
}
}  // namespace
bool available() {
  return false;
}
int channel_block() {
  return 0;
}
bool supports(const Conv2dShape&, bool) {
  return false;
}
size_t workspace_bytes(const Conv2dShape&, bool) {
  return 0;
}
void forward(float*, const float*, const float*, const float*, const Conv2dShape&, bool, bool,
             void*) {
  missing();
}
void backward(float*, float*, const float*, const float*, const float*, const Conv2dShape&, bool,
              void*) {
  missing();
}
}  // namespace equivae::cpu::onednn

#endif
