"""Views of a timm model: objects of the model's own class that hold only some of its modules.

A view runs timm's own code (``forward_features``, ``forward_head``, ``_pos_embed``)
on a part of the model: the modules it keeps are the model's (shared, not
copied), the ones of other stages *stand aside* (return their input), and
its plain attributes (flags, sizes, the pooling type) are the model's. This
is how a ViT's stem keeps its class token and position embedding, and how
pooling is timm's ``forward_head(x, pre_logits=True)`` without the classifier.
"""

from __future__ import annotations

import functools

from torch import nn


class StandAside:
    """Stands in for a module of another stage: returns its input (and iterates as an empty sequence)."""

    def __call__(self, x, *args, **kwargs):
        return x

    def __iter__(self):
        return iter(())

    def __len__(self):
        return 0

    def __repr__(self):
        return "StandAside()"


@functools.cache
def view_class(cls: type, role: str) -> type:
    """A subclass of a timm model class whose forward is one part of the model's own forward."""

    def forward(self, x):
        if role == "Stem":
            return cls.forward_features(self, x)
        return cls.forward_head(self, x, pre_logits=True)

    return type(f"{cls.__name__}{role}", (cls,), {"forward": forward, "__module__": __name__})


def view(module: nn.Module, keep: set[str], role: str | None = None,
         replace: dict[str, nn.Module] | None = None) -> nn.Module:
    """An object of ``module``'s class that owns only the children, parameters and buffers in ``keep``.

    Everything else stands aside (children) or is None (parameters). Plain
    attributes (flags, sizes, the pooling type) are shared with the model, so
    timm's own methods run on the view unchanged.
    """
    cls = view_class(type(module), role) if role else type(module)
    out = cls.__new__(cls)
    nn.Module.__init__(out)
    for key, value in module.__dict__.items():
        if key not in out.__dict__:
            out.__dict__[key] = value
    out.training = module.training
    replace = replace or {}
    for name, child in module._modules.items():
        if name in replace:
            out._modules[name] = replace[name]
        elif name in keep or child is None:
            out._modules[name] = child
        else:
            out.__dict__[name] = StandAside()
    for name, p in module._parameters.items():
        if name in keep or p is None:
            out._parameters[name] = p
        else:
            out.__dict__[name] = None
    for name, b in module._buffers.items():
        if name in keep or b is None:
            out.register_buffer(name, b, persistent=name not in module._non_persistent_buffers_set)
        else:
            out.__dict__[name] = b
    return out


def pool_view(model: nn.Module, keep: tuple[str, ...], classifier: str) -> nn.Module:
    """forward_head(pre_logits=True) on a view that holds the head's modules but not the classifier."""
    parts = classifier.split(".")
    if len(parts) == 1:
        return view(model, set(keep) - {parts[0]}, "Pool")
    # A nested classifier (ConvNeXt's head.fc): views down the path, the classifier standing aside.
    inner = model.get_submodule(".".join(parts[:-1]))
    inner_view = view(inner, set(inner._modules) - {parts[-1]})
    for depth in range(len(parts) - 2, 0, -1):
        parent = model.get_submodule(".".join(parts[:depth]))
        inner_view = view(parent, set(parent._modules), replace={parts[depth]: inner_view})
    return view(model, set(keep), "Pool", replace={parts[0]: inner_view})
