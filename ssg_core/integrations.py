"""SSG inside an unmodified upstream checkout: `enable_ssg(model, ssg)`.

    from ssg_core import SSG
    from ssg_core.integrations import enable_ssg

    with enable_ssg(model, SSG(beta=0.5)):          # upstream's VAR, Infinity or HARTForT2I instance
        out = model.autoregressive_infer_cfg(...)    # upstream's call, upstream's arguments

Upstream's sampling loops look their token sampler up by its module-level name at call time,
right after classifier-free guidance (VAR and HART: `sample_with_top_k_top_p_`; Infinity:
`sample_with_top_k_top_p_also_inplace_modifying_logits_` on the (B, h*w*d, 2) view of its
(B, h*w, 2d) bit logits). While the context is active:

* that name, in the namespace of the function the model runs, is a hook that guides the logits
  it receives (in place, as if the loop had called `ssg` just before the sampler) and then
  calls the sampler that was there before;
* the instance's `autoregressive_infer_cfg` (an instance attribute: other instances of the class
  are untouched) resets the SSG at the start of every call with the scale grids of that call
  (`patch_nums` of the model; Infinity: the `scale_schedule` argument).

The hook takes the scale index from the call order and checks that the logits hold that scale's
grid; a call that does not fit is refused with one `SSGError` line, as is a checkout whose
structure differs from the upstream commit this was written against, and nested or concurrent
use on one module. Leaving the context restores every patched name, also after an exception.
Nothing is imported from upstream here and no file is touched.
"""
from __future__ import annotations

import contextlib
import inspect
import threading
from dataclasses import dataclass
from typing import Any, Callable, Iterator

import torch

from .errors import SSGError

FUNCTION = "autoregressive_infer_cfg"


@dataclass(frozen=True)
class UpstreamModel:
    """What the integration relies on in one upstream code base."""
    name: str            # "VAR", "Infinity", "HART"
    repo: str            # GitHub repository
    commit: str          # the commit the integration was written and tested against
    class_name: str      # the model class
    module: str          # its module inside the checkout (matched as a dotted suffix)
    sampler: str         # module-level sampler that autoregressive_infer_cfg calls after CFG
    bit_logits: bool     # the sampler receives (B, h*w*d, 2) views of (B, h*w, 2d) logits (with use_bit_label)

    @property
    def where(self) -> str:
        return f"written against {self.repo} {self.commit}"


VAR = UpstreamModel("VAR", "FoundationVision/VAR", "78b9539", "VAR", "models.var", "sample_with_top_k_top_p_", False)
INFINITY = UpstreamModel("Infinity", "FoundationVision/Infinity", "4c27bbb", "Infinity", "infinity.models.infinity",
                         "sample_with_top_k_top_p_also_inplace_modifying_logits_", True)
HART = UpstreamModel("HART", "mit-han-lab/hart", "e28a41f", "HARTForT2I",
                     "hart.modules.models.transformer.hart_transformer_t2i", "sample_with_top_k_top_p_", False)
SUPPORTED = (VAR, INFINITY, HART)

_registry_lock = threading.Lock()
_patched: dict[int, str] = {}   # id(namespace dict) -> "module.sampler" while a context patches it


def recognise(model: Any) -> UpstreamModel:
    """Which upstream model `model` is (or derives from), by class name and module path."""
    for cls in type(model).__mro__:
        for kind in SUPPORTED:
            mod = getattr(cls, "__module__", "") or ""
            if cls.__name__ == kind.class_name and (mod == kind.module or mod.endswith("." + kind.module)):
                return kind
    names = ", ".join(f"{k.module}.{k.class_name}" for k in SUPPORTED)
    raise SSGError(f"enable_ssg: {type(model).__module__}.{type(model).__name__} is not one of the supported "
                   f"models ({names})")


# ---------------------------------------------------------------- the grids of one sampling call
def _grids(kind: UpstreamModel, model: Any, args: dict[str, Any]) -> tuple[list[tuple[int, int]], int]:
    """(token grid (h, w) of every scale, number of sampler calls the loop makes) for one call,
    or a one-line error for an argument the hook cannot follow."""
    if kind is INFINITY:
        schedule = args.get("scale_schedule")
        try:
            grids = [(int(s[1]), int(s[2])) for s in schedule]
        except (TypeError, IndexError, ValueError):
            raise SSGError(f"enable_ssg: Infinity needs scale_schedule as a list of (t, h, w), got {schedule!r}") from None
        trunk = args.get("trunk_scale", 1000)
        return grids, min(len(grids), int(trunk)) if trunk is not None else len(grids)
    if kind is VAR and isinstance(args.get("g_seed"), (list, tuple)):
        raise SSGError("enable_ssg: a g_seed list (per-image generators, this project's VAR only) samples outside "
                       "`sample_with_top_k_top_p_`; pass ssg= to this project's VAR instead, or an int g_seed")
    if kind is HART and args.get("num_maskgit_iters", 1) != 1:
        raise SSGError(f"enable_ssg: HART with num_maskgit_iters={args['num_maskgit_iters']} samples the last scale "
                       f"in partial steps; SSG needs the whole grid: use num_maskgit_iters=1 (upstream's default)")
    grids = [(int(p), int(p)) for p in model.patch_nums]
    return grids, len(grids)


class _Call:
    """The state of one running `autoregressive_infer_cfg` call: which scale the next sampler call is."""

    def __init__(self, kind: UpstreamModel, ssg, grids: list[tuple[int, int]], expected: int, bit_logits: bool):
        self.kind, self.ssg, self.grids, self.expected, self.bit_logits = kind, ssg, grids, expected, bit_logits
        self.k = 0
        self.bits: int | None = None   # Infinity: bits per token, fixed by the first call
        self.thread = threading.get_ident()

    def refuse(self, what: str) -> SSGError:
        return SSGError(f"enable_ssg: {what}; this {self.kind.name} checkout does not sample the way the integration "
                        f"expects ({self.kind.where})")

    def guide_(self, logits: torch.Tensor) -> None:
        """Apply SSG to the sampler's input `logits` in place (scale = call order, grid checked)."""
        k, K = self.k, len(self.grids)
        if k >= self.expected:
            raise self.refuse(f"`{self.kind.sampler}` was called more than once per scale ({k + 1} calls for {K} scales)")
        h, w = self.grids[k]
        shape = tuple(logits.shape) if isinstance(logits, torch.Tensor) else type(logits).__name__
        if self.bit_logits:  # (B, h*w*d, 2): bit j of token t at row t*d + j, classes in the last axis
            fits = (isinstance(logits, torch.Tensor) and logits.ndim == 3 and logits.shape[2] == 2
                    and logits.shape[1] % (h * w) == 0 and (self.bits is None or logits.shape[1] == h * w * self.bits))
            if not fits:
                raise self.refuse(f"scale {k} ({h}x{w}): `{self.kind.sampler}` received logits {shape}, expected "
                                  f"(B, {h}*{w}*d, 2)")
            self.bits = logits.shape[1] // (h * w)
            x = logits.reshape(logits.shape[0], h * w, 2 * self.bits)   # the (B, h*w, 2d) layout SSG works on
        else:
            if not (isinstance(logits, torch.Tensor) and logits.ndim == 3 and logits.shape[1] == h * w):
                raise self.refuse(f"scale {k} ({h}x{w}): `{self.kind.sampler}` received logits {shape}, expected "
                                  f"(B, {h * w}, V)")
            x = logits
        guided = self.ssg(k, x, (h, w))
        if guided is not x:  # in place: the loop may read the tensor after sampling (VAR/HART more_smooth)
            logits.copy_(guided.reshape(logits.shape))
        self.k += 1


# ---------------------------------------------------------------- the context
def _mentions(code, name: str) -> bool:
    """Whether `code` (or a code object nested in it: a comprehension, a local function) uses `name`."""
    return name in code.co_names or any(_mentions(c, name) for c in code.co_consts if inspect.iscode(c))


def _structure(model: Any, kind: UpstreamModel) -> tuple[Callable, inspect.Signature, dict]:
    """The model's sampling function, its signature, and the namespace it looks the sampler up in."""
    fn = getattr(type(model), FUNCTION, None)
    if not callable(fn):
        raise SSGError(f"enable_ssg: {type(model).__name__} has no `{FUNCTION}` ({kind.where})")
    raw = inspect.unwrap(fn)
    code, namespace = getattr(raw, "__code__", None), getattr(raw, "__globals__", None)
    if code is None or namespace is None or not _mentions(code, kind.sampler):
        raise SSGError(f"enable_ssg: {type(model).__name__}.{FUNCTION} does not call a module-level "
                       f"`{kind.sampler}` ({kind.where})")
    if not callable(namespace.get(kind.sampler)):
        raise SSGError(f"enable_ssg: module {namespace.get('__name__')} has no function `{kind.sampler}` "
                       f"({kind.where})")
    if kind is not INFINITY and not hasattr(model, "patch_nums"):
        raise SSGError(f"enable_ssg: {type(model).__name__} has no attribute patch_nums (its scale schedule; "
                       f"{kind.where})")
    sig = inspect.signature(fn)
    needed = {INFINITY: ("scale_schedule",)}.get(kind, ())
    missing = [n for n in needed if n not in sig.parameters]
    if missing:
        raise SSGError(f"enable_ssg: {type(model).__name__}.{FUNCTION} has no argument {', '.join(missing)} "
                       f"({kind.where})")
    return fn, sig, namespace


@contextlib.contextmanager
def enable_ssg(model: Any, ssg) -> Iterator[Any]:
    """Apply `ssg` (an `ssg_core.SSG`) in every `model.autoregressive_infer_cfg(...)` call inside the block.

    model: upstream's `models.var.VAR`, `infinity.models.infinity.Infinity` or
    `hart.modules.models.transformer.hart_transformer_t2i.HARTForT2I` (or a subclass), or this
    project's classes of the same names. The guidance acts where this project's models call
    `ssg=`: on the post-CFG logits (B, h*w, V) (Infinity: (B, h*w, 2d) after temperature; HART:
    the discrete tokens only) before top-k/top-p, giving the same tokens for the same weights,
    seed and settings. Yields the model. Raises `SSGError` (one line) for an unsupported model,
    a checkout whose structure differs, or nested/concurrent use on the same module.
    """
    if not (callable(ssg) and callable(getattr(ssg, "reset", None))):
        raise SSGError(f"enable_ssg: expected an ssg_core.SSG, got {type(ssg).__name__}")
    kind = recognise(model)
    fn, sig, namespace = _structure(model, kind)
    state: dict[str, _Call | None] = {"call": None}
    call_lock = threading.Lock()

    def hook(*args, **kwargs):
        call = state["call"]
        if call is not None and call.thread == threading.get_ident():
            logits = args[0] if args else kwargs.get("logits_BlV")
            call.guide_(logits)
        return sampler(*args, **kwargs)

    had_own = FUNCTION in vars(model)
    inner = getattr(model, FUNCTION)   # bound method (or an instance attribute someone set before)

    def autoregressive_infer_cfg(*args, **kwargs):
        try:
            bound = sig.bind(model, *args, **kwargs)
        except TypeError:
            return inner(*args, **kwargs)   # upstream's own error for a wrong call
        bound.apply_defaults()
        if bound.arguments.get("ssg") is not None:   # this project's models also take ssg=: never guide twice
            raise SSGError("enable_ssg: this call also passes ssg=; use one of the two")
        with call_lock:   # checked first: a second call must not reset the SSG state of the running one
            if state["call"] is not None:
                raise SSGError(f"enable_ssg: {kind.name}.{FUNCTION} is already running under this context (a nested "
                               f"or concurrent call); SSG keeps per-call state, so calls must not overlap")
            # Infinity built with use_bit_label=0 samples (B, h*w, V) token logits, like VAR
            state["call"] = call = _Call(kind, ssg, [], 0, kind.bit_logits and bool(getattr(model, "use_bit_label", 1)))
        try:
            call.grids, call.expected = _grids(kind, model, bound.arguments)
            ssg.reset(len(call.grids))      # a beta list of the wrong length fails here, before sampling
            out = inner(*args, **kwargs)
        finally:
            state["call"] = None
        if call.k != call.expected:
            raise call.refuse(f"`{kind.sampler}` was called {call.k} times for {call.expected} scales")
        return out

    autoregressive_infer_cfg.__doc__ = f"{FUNCTION} of this instance with SSG ({ssg!r}); see ssg_core.integrations."
    name = f"{namespace.get('__name__')}.{kind.sampler}"
    with _registry_lock:
        if id(namespace) in _patched:
            raise SSGError(f"enable_ssg: {name} is already patched by another enable_ssg context (nested or "
                           f"concurrent use on one module is refused); leave that context first")
        _patched[id(namespace)] = name
        sampler = namespace[kind.sampler]   # what the hook calls: the sampler, or whatever wraps it right now
    try:
        namespace[kind.sampler] = hook
        vars(model)[FUNCTION] = autoregressive_infer_cfg
        yield model
    finally:
        namespace[kind.sampler] = sampler
        if had_own:
            vars(model)[FUNCTION] = inner
        else:
            vars(model).pop(FUNCTION, None)
        with _registry_lock:
            _patched.pop(id(namespace), None)
