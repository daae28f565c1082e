"""A fast inference copy of a model's frozen prefix.

Frozen layers are constants, so they can be compiled into something cheaper
than the training graph before they run over every image:

* BatchNorm folds into the convolution before it (one conv instead of a conv,
  a normalisation and their intermediate tensors);
* channels_last memory layout, which oneDNN's CPU convolutions prefer;
* on the CPU, no per-call padding copy: TensorFlow-style asymmetric "SAME"
  padding (EfficientNet-Lite's stride-2 convolutions) becomes a kernel one
  tap larger with zero weights and symmetric padding, the same arithmetic
  without the copy and fill;
* on the CPU, the activation after a convolution (ReLU, ReLU6, Hardswish,
  SiLU) runs inside it as a oneDNN post-op instead of as a second pass over
  memory;
* bf16 autocast, only where the CPU has native bf16 dot products
  (``devices.cpu_has_fast_bf16``): emulated bf16 is slower than fp32.

Measured on a 2-core x86 CPU (AVX2, no bf16, glibc malloc tuned as
runtime.py does), EfficientNet-Lite0's whole body, batch 32, in one process:
the eager NCHW fp32 stages ran at ~44 img/s, folding + channels_last at ~66,
and with the padding and activation lowering at ~78 (1.8x; ``python -m
bench``, figure 8); outputs equal within 1e-5. Before the lowering,
convolutions took 73% of the folded copy's time, ReLU6 13% and padding
copies 11%; after it, convolutions are all that is left, so fp32 on this CPU
has no further lever of this kind: bf16 is the next one, where the CPU has it.
"""

from __future__ import annotations

import contextlib
import copy
import functools
import logging

import torch
from torch import fx, nn
from torch.nn.utils.fusion import fuse_conv_bn_eval

from .. import devices

log = logging.getLogger(__name__)


class _ConvLeafTracer(fx.Tracer):
    """Keep every convolution (subclasses too, e.g. padded ones) as one module call."""

    def is_leaf_module(self, m: nn.Module, qualname: str) -> bool:
        return isinstance(m, (nn.Conv2d, nn.BatchNorm2d)) or super().is_leaf_module(m, qualname)


def _set_submodule(root: nn.Module, target: str, new: nn.Module) -> None:
    parent, _, name = target.rpartition(".")
    setattr(root.get_submodule(parent) if parent else root, name, new)


def _recompile(gm: fx.GraphModule) -> None:
    """Drop the nodes and submodules a rewrite left unused, then regenerate the forward."""
    gm.graph.eliminate_dead_code()
    gm.delete_all_unused_submodules()
    gm.recompile()


def _foldable_conv(conv) -> bool:
    """A convolution whose output is linear in its weight as stored: plain, or zero-padding before it.

    Not, for example, timm's StdConv2d, which standardises its weight on every call.
    """
    if not isinstance(conv, nn.Conv2d):
        return False
    forward = type(conv).forward
    return forward is nn.Conv2d.forward or hasattr(conv, "extra_pad") or type(conv).__name__ == "Conv2dSame"


def _after_batchnorm(bn: nn.Module) -> nn.Module | None:
    """What replaces a folded BatchNorm: nothing, or the activation timm's BatchNormAct2d runs after it.

    None: a BatchNorm subclass whose forward does something else, which is left as it is.
    """
    if type(bn).forward is nn.BatchNorm2d.forward:
        return nn.Identity()
    drop, act = getattr(bn, "drop", None), getattr(bn, "act", None)
    if type(bn).__name__ == "BatchNormAct2d" and isinstance(drop, nn.Module) and isinstance(act, nn.Module):
        return act if isinstance(drop, nn.Identity) else nn.Sequential(drop, act)
    return None


def fold_batchnorm(module: nn.Module) -> nn.Module:
    """An eval-mode copy of ``module`` with each BatchNorm folded into its conv.

    Only a BatchNorm that directly consumes a convolution's sole output is
    folded; anything else is kept as it is (timm's BatchNormAct2d folds and
    keeps its activation). Modules fx cannot trace are returned as an
    unfolded copy.
    """
    module = copy.deepcopy(module).eval()
    try:
        graph = _ConvLeafTracer().trace(module)
    except Exception as exc:  # dynamic control flow: keep the plain copy
        log.debug("not folding %s: %s", type(module).__name__, exc)
        return module
    gm = fx.GraphModule(module, graph)
    modules = dict(gm.named_modules())
    folded = 0
    for node in list(gm.graph.nodes):
        if node.op != "call_module" or not isinstance(modules.get(node.target), nn.BatchNorm2d):
            continue
        prev = node.args[0]
        if not (isinstance(prev, fx.Node) and prev.op == "call_module"):
            continue
        conv, bn = modules.get(prev.target), modules[node.target]
        after = _after_batchnorm(bn)
        if not _foldable_conv(conv) or len(prev.users) != 1 or not bn.track_running_stats or after is None:
            continue
        _set_submodule(gm, prev.target, fuse_conv_bn_eval(conv, bn))
        if isinstance(after, nn.Identity):
            node.replace_all_uses_with(prev)
            gm.graph.erase_node(node)
        else:  # the activation stays where the BatchNorm was
            _set_submodule(gm, node.target, after)
        folded += 1
    _recompile(gm)
    log.debug("folded %d BatchNorm layer(s) in %s", folded, type(module).__name__)
    return gm


def _unpad_conv(conv: nn.Conv2d) -> nn.Conv2d | None:
    """A plain Conv2d equal to ``conv`` with its explicit asymmetric zero padding built in.

    TensorFlow's "SAME" padding pads (before, after) with after >= before.
    Zero taps prepended to the kernel (after - before of them) with symmetric
    padding ``after`` sample exactly the same pixels, so the padded copy of
    the input, made on every call, is no longer needed.
    """
    pad = getattr(conv, "extra_pad", None)
    if not pad or tuple(conv.padding) != (0, 0) or conv.padding_mode != "zeros" or conv.dilation != (1, 1):
        return None
    left, right, top, bottom = pad
    dh, dw = bottom - top, right - left
    if dh < 0 or dw < 0:
        return None
    kh, kw = conv.kernel_size
    new = nn.Conv2d(
        conv.in_channels, conv.out_channels, (kh + dh, kw + dw), stride=conv.stride, padding=(bottom, right),
        groups=conv.groups, bias=conv.bias is not None,
    ).to(device=conv.weight.device, dtype=conv.weight.dtype)
    with torch.no_grad():
        new.weight.copy_(torch.nn.functional.pad(conv.weight, (dw, 0, dh, 0)))
        if conv.bias is not None:
            new.bias.copy_(conv.bias)
    return new.eval()


def _is_plain_conv(conv: nn.Conv2d) -> bool:
    """A convolution whose forward is just ``F.conv2d`` with zero padding in the conv itself."""
    own_forward = type(conv) is nn.Conv2d or getattr(conv, "extra_pad", "none") is None  # SamePadConv2d, symmetric
    return own_forward and conv.padding_mode == "zeros" and not isinstance(conv.padding, str)


def _pointwise_attr(act: nn.Module) -> tuple[str, list[float]] | None:
    """oneDNN's name and scalars for an activation it can run as a convolution post-op."""
    if isinstance(act, nn.ReLU):
        return "relu", []
    if isinstance(act, nn.Hardtanh):  # ReLU6 included
        return "hardtanh", [float(act.min_val), float(act.max_val)]
    if isinstance(act, nn.Hardswish):
        return "hardswish", []
    if isinstance(act, nn.SiLU):
        return "swish", []
    return None


@functools.cache
def _pointwise_works(attr: str, scalars: tuple[float, ...]) -> bool:
    """Whether this torch build runs ``conv + attr`` fused on the CPU, and gets it right.

    ``mkldnn._convolution_pointwise`` is the op PyTorch's own compiler emits
    for this fusion on x86; it is checked once against the unfused pair.
    """
    op = getattr(getattr(torch.ops, "mkldnn", None), "_convolution_pointwise", None)
    if op is None or not torch.backends.mkldnn.is_available():
        return False
    acts = {
        "relu": torch.relu,
        "hardtanh": lambda t: t.clamp(*scalars),
        "hardswish": torch.nn.functional.hardswish,
        "swish": torch.nn.functional.silu,
    }
    try:
        g = torch.Generator().manual_seed(0)
        x = torch.randn(2, 8, 9, 9, generator=g).contiguous(memory_format=torch.channels_last)
        w = torch.randn(8, 4, 3, 3, generator=g)
        b = torch.randn(8, generator=g)
        with torch.no_grad():
            want = acts[attr](torch.nn.functional.conv2d(x, w, b, 2, 1, 1, 2))
            got = op(x, w, b, [1, 1], [2, 2], [1, 1], 2, attr, list(scalars), "")
        return got.shape == want.shape and bool(torch.allclose(got, want, atol=1e-4, rtol=1e-4))
    except Exception as exc:  # an op missing from this build: run unfused
        log.debug("no fused conv + %s on this torch build: %s", attr, exc)
        return False


class ConvAct(nn.Module):
    """A convolution with its activation as a oneDNN post-op (CPU inference only)."""

    def __init__(self, conv: nn.Conv2d, attr: str, scalars: list[float]):
        super().__init__()
        # conv is already a private copy (fold_batchnorm): no need to clone again
        self.register_buffer("weight", conv.weight.detach())
        self.register_buffer("bias", None if conv.bias is None else conv.bias.detach())
        self.padding = list(conv.padding)
        self.stride = list(conv.stride)
        self.dilation = list(conv.dilation)
        self.groups = conv.groups
        self.attr, self.scalars = attr, list(scalars)

    def forward(self, x):
        return torch.ops.mkldnn._convolution_pointwise(
            x, self.weight, self.bias, self.padding, self.stride, self.dilation, self.groups,
            self.attr, self.scalars, "",
        )

    def extra_repr(self) -> str:
        return f"{tuple(self.weight.shape)}, stride={self.stride}, padding={self.padding}, post-op={self.attr}"


def lower_for_cpu(module: nn.Module) -> nn.Module:
    """Padding built into kernels and activations fused into convolutions, where both apply.

    ``module`` is an eval-mode GraphModule from :func:`fold_batchnorm`, a
    private copy whose tensors the result may share (anything else is
    returned as it is). Only a convolution whose sole user
    is the activation is fused; the result computes the same function.
    """
    if not isinstance(module, fx.GraphModule):
        return module
    gm = module
    modules = dict(gm.named_modules())
    unpadded = fused = 0
    for node in list(gm.graph.nodes):
        if node.op != "call_module" or not isinstance(modules.get(node.target), nn.Conv2d):
            continue
        conv = modules[node.target]
        plain = _unpad_conv(conv)
        if plain is not None:
            _set_submodule(gm, node.target, plain)
            modules[node.target] = conv = plain
            unpadded += 1
        users = list(node.users)
        if len(users) != 1 or users[0].op != "call_module" or not _is_plain_conv(conv):
            continue
        act_node = users[0]
        attr = _pointwise_attr(modules.get(act_node.target))
        if attr is None or not _pointwise_works(attr[0], tuple(attr[1])):
            continue
        _set_submodule(gm, node.target, ConvAct(conv, *attr))
        act_node.replace_all_uses_with(node)
        gm.graph.erase_node(act_node)
        fused += 1
    _recompile(gm)
    log.debug("CPU lowering: %d padding copies removed, %d activations fused", unpadded, fused)
    return gm


class FrozenPrefix:
    """Runs ``model.prefix(x, k)`` through folded, channels_last copies of the frozen stages.

    Not an nn.Module of the model: it is a derived constant, rebuilt when the
    frozen prefix changes, and never saved.
    """

    def __init__(self, model, k: int, device: torch.device, *, channels_last: bool = True, bf16: bool | None = None):
        self.model = model
        self.k = k
        self.device = device
        self.channels_last = channels_last
        self.bf16 = devices.cpu_has_fast_bf16() if bf16 is None else bf16
        self.bf16 = self.bf16 and device.type == "cpu"
        stages = [fold_batchnorm(model.body[i]) for i in range(k)]
        # The lowering's fused op is oneDNN's, and under bf16 autocast it would
        # see mixed dtypes: fp32 on the CPU only.
        self.lowered = device.type == "cpu" and not self.bf16
        if self.lowered:
            stages = [lower_for_cpu(s) for s in stages]
        if channels_last:
            stages = [s.to(memory_format=torch.channels_last) for s in stages]
        self.stages = nn.ModuleList(stages).to(device).eval()

    def _autocast(self):
        if self.bf16:
            return torch.autocast("cpu", dtype=torch.bfloat16)
        return contextlib.nullcontext()

    @torch.no_grad()
    def __call__(self, x: torch.Tensor):
        if self.channels_last and x.dim() == 4:
            x = x.contiguous(memory_format=torch.channels_last)
        with self._autocast():
            h, feats = self.model.prefix(x, self.k, stages=self.stages)
        if self.bf16:
            h, feats = h.float(), [f.float() for f in feats]
        return h, feats
