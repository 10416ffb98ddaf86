"""Repeated calls at low host cost: check a call signature once, then only launch.

A call's signature is, per argument, its (shape, dtype, device, strides), or None for an
output passed as None, plus the keyword names. Every check `Launcher.bind` makes except one
follows from it: dtypes, ranks, the sizes and the dims derived from them, contiguity, the
device, the grid, the size specialization. So the first call with a signature runs the full
checks and records a `CallPlan`; later calls with that signature check only what can differ
(the 16-byte alignment of each address, read anyway to pass it, and that a passed output
shares no memory with another argument), allocate the outputs not passed, and launch.

Most calls repeat the previous call's signature, so a Kernel first asks `RecentCall`, which
checks the arguments against the last signature in C++ (the TensorGuards torch.compile
checks its graphs' inputs with: dtype, device, sizes, strides), skipping the Python tuple
building and hashing of `call_signature`; anything else goes through the signature dict.
DeepGEMM measured 50-80 us of host work per call of its JIT kernels; here what remains is
that check, one data_ptr per tensor and cuLaunchKernel (bench/launch_overhead.py).
"""
from __future__ import annotations

from ..spec import KernelSpec
from .launcher import ALIGNMENT, Bound, Launcher

# Plans are kept per exact shape; a caller whose M changes every call must not grow memory
# without bound, so the oldest plan goes once this many are kept.
MAX_PLANS = 512


def call_signature(args: tuple, kwargs: dict) -> tuple:
    """The signature of a call; AttributeError if an argument is not a tensor or None."""
    key = tuple([None if a is None else (a.shape, a.dtype, a.device, a.stride())
                 for a in args])
    if kwargs:
        key += tuple([(name, None if v is None else (v.shape, v.dtype, v.device, v.stride()))
                      for name, v in kwargs.items()])
    return key


class CallPlan:
    """What a checked call of one signature needs, worked out once.

    A call's `values` are its arguments in order, positional then keyword; the outputs the
    call did not pass are allocated and appended to them. `sources` says where in `values`
    each entry parameter's tensor is, so a call is a few list lookups and the launch."""

    __slots__ = ("checker", "sources", "allocations", "sizes", "device", "launch",
                 "output_sources", "single_output", "overlaps", "disjoint", "recent")

    def __init__(self, checker: Launcher, launcher: Launcher, bound: Bound, args: tuple,
                 kwargs: dict):
        spec = checker.spec
        positional = spec.inputs + spec.outputs               # Launcher's positional order
        names = [t.name for t, _ in zip(positional, args)] + list(kwargs)
        values = args + tuple(kwargs.values())
        position = {name: i for i, (name, v) in enumerate(zip(names, values)) if v is not None}
        self.allocations = []
        for i, t in enumerate(spec.tensors):
            if t.name not in position:                        # an output to allocate
                position[t.name] = len(values) + len(self.allocations)
                self.allocations.append((tuple(bound.tensors[i].shape), bound.tensors[i].dtype))
        self.checker = checker        # re-runs the full checks when a per-call check fails
        self.sources = [position[t.name] for t in spec.tensors]
        self.overlaps = _may_overlap(spec, bound, self.sources, len(values))
        self.disjoint = None          # the last addresses _check_overlaps passed
        self.output_sources = [position[t.name] for t in spec.outputs]
        self.single_output = self.output_sources[0] if len(self.output_sources) == 1 else None
        self.sizes = [bound.sizes[name] for name in spec.size_symbols]
        self.device = bound.device
        # `launcher` is the variant this signature's sizes select.
        self.launch = launcher.prepared(bound.grid, bound.device.index)
        self.recent = RecentCall.of(args, kwargs, self)

    def __call__(self, values: tuple, args: tuple, kwargs: dict):
        """Launch the call `(*args, **kwargs)`, whose `values` are args + kwargs' values."""
        if self.allocations:
            import torch
            values += tuple([torch.empty(shape, dtype=dtype, device=self.device)
                             for shape, dtype in self.allocations])
        pointers = [values[i].data_ptr() for i in self.sources]
        misaligned = 0
        for pointer in pointers:
            misaligned |= pointer
        if misaligned % ALIGNMENT:
            self.checker.bind(*args, **kwargs)           # raises the error naming the argument
        if self.overlaps and pointers != self.disjoint:
            self._check_overlaps(pointers, args, kwargs)
        self.launch(pointers, self.sizes)
        if self.single_output is not None:
            return values[self.single_output]
        return tuple([values[i] for i in self.output_sources]) or None

    def _check_overlaps(self, pointers: list[int], args: tuple, kwargs: dict) -> None:
        """Raises, through the full checks, where a passed output shares memory with another
        argument. Remembers addresses found disjoint: a caller that passes its outputs mostly
        passes the same buffers call after call, and then pays one list comparison."""
        for i, j, low, high in self.overlaps:
            if low < pointers[i] - pointers[j] < high:
                self.checker.bind(*args, **kwargs)       # raises the error naming both
        self.disjoint = pointers


def _may_overlap(spec: KernelSpec, bound: Bound, sources: list[int], passed: int) -> tuple:
    """The pairs of entry tensors whose memory a later call of this signature could share: a
    passed output and any other passed tensor (allocated outputs alias nothing, so most calls
    have none). Each is (i, j, low, high), indices in spec.tensors order: tensors i and j
    overlap when low < address(i) - address(j) < high, their sizes being fixed by the
    signature."""
    nbytes = [t.nbytes for t in bound.tensors]
    given = [i for i, source in enumerate(sources) if source < passed and nbytes[i]]
    return tuple((i, j, -nbytes[i], nbytes[j]) for i in given for j in given
                 if i < j and (spec.tensors[i].is_out or spec.tensors[j].is_out))


class RecentCall:
    """The last call's signature as a C++ check, and what it maps to (a plan, a kernel)."""

    __slots__ = ("arg_count", "keywords", "check", "value")

    def __init__(self, args: tuple, kwargs: dict, check, value):
        self.arg_count, self.keywords = len(args), tuple(kwargs)
        self.check, self.value = check, value

    @staticmethod
    def of(args: tuple, kwargs: dict, value) -> "RecentCall | None":
        """None where the call passed a None or where this torch has no TensorGuards."""
        values = args + tuple(kwargs.values())
        if any(v is None for v in values):
            return None
        try:
            from torch._C._dynamo.guards import TensorGuards
            guards = TensorGuards(*values, dynamic_dims_sizes=[list(v.shape) for v in values],
                                  dynamic_dims_strides=[list(v.stride()) for v in values])
        except (ImportError, AttributeError, TypeError, RuntimeError):
            return None
        return RecentCall(args, kwargs, guards.check, value)

    def get(self, args: tuple, kwargs: dict):
        """`value` if this call has the recorded signature, else None."""
        if len(args) == self.arg_count and tuple(kwargs) == self.keywords and \
                self.check(*args, *kwargs.values()):
            return self.value
        return None


class CallPlans(dict):
    """Signature -> CallPlan, keeping at most MAX_PLANS."""

    def remember(self, key: tuple, plan: CallPlan) -> CallPlan:
        if len(self) >= MAX_PLANS:
            del self[next(iter(self))]
        self[key] = plan
        return plan
