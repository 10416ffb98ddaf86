"""Call a compiled kernel on torch tensors.

`Launcher.bind` turns a call's arguments into what the kernel entry takes (pointers in
declaration order, then the size symbols) and checks everything the kernel relies on: types,
ranks, shapes against the declared symbolic dims (including the divisibility the compiler
assumed, e.g. 128 | K for `K / 128`), contiguity, alignment, device. It is plain Python, so
every check is testable without a GPU. `Launcher.__call__` adds the launch itself, with the
kernelParams array built once so a call costs little more than the checks.
"""
from __future__ import annotations

import struct
from dataclasses import dataclass

from ..diagnostics import LaunchError
from ..dims import SM_COUNT, BinOp, Const, Dim, DimError, SmCount, Sym
from ..dtypes import torch_dtype
from ..spec import COMM_PARAMS, KernelSpec, TensorParam
from ..target import get_target
from . import driver
from .device import DeviceError, check_runs_on, device_target
from .tensormap import TensorMaps

# Generated code may use 16-byte vector accesses and TMA, which need 16-byte aligned bases.
ALIGNMENT = 16
U32_LIMIT = 1 << 32
PARAM_CODES = {"u32": "I", "u64": "Q", "ptr": "Q"}     # struct codes of scalar parameters


@dataclass(slots=True)
class Bound:
    """One call's arguments, checked: what a launch needs."""
    tensors: tuple            # in spec.tensors (declaration) order, outputs allocated
    sizes: dict[str, int]     # every size symbol
    grid: tuple[int, int, int]
    device: object            # torch.device all tensors live on


def declaration(t: TensorParam) -> str:
    out = "out " if t.is_out else ""
    return f"{t.name}: {out}{t.dtype}[{', '.join(map(str, t.dims))}]"


def _size_and_offset(d: Dim) -> tuple[str, int] | None:
    """(size, c) for a dimension S or S + c or S - c (or c + S), the size's value being the
    dimension's length less c; None for any other."""
    if isinstance(d, Sym):
        return d.name, 0
    if isinstance(d, BinOp) and d.op in "+-":
        if isinstance(d.lhs, Sym) and isinstance(d.rhs, Const):
            return d.lhs.name, d.rhs.value if d.op == "+" else -d.rhs.value
        if d.op == "+" and isinstance(d.lhs, Const) and isinstance(d.rhs, Sym):
            return d.rhs.name, d.lhs.value
    return None


class Launcher:
    """A kernel ready to call: `y, s = launcher(x)` or `launcher(x, y=y, s=s)`.

    `function` is a CUfunction loaded on CUDA device `device` (None: the caller vouches that it
    fits whatever device the tensors are on). `Launcher.from_image` loads on demand instead,
    on every device the kernel is called on. Not thread-safe: calls share the argument buffers.
    """

    def __init__(self, spec: KernelSpec, function=None, device: int | None = None, *,
                 image: bytes | str | None = None):
        import numpy as np
        self.spec = spec
        self._image = image
        self._functions = {}
        if function is not None:
            self._prepare(function, device)
            self._functions[device] = function
        # Everything a call needs that depends only on the spec is worked out here, once.
        self._positional = spec.inputs + spec.outputs   # also the order sizes are bound in
        self._by_name = {t.name: t for t in spec.tensors}
        self._input_names = tuple(t.name for t in spec.inputs)
        self._outputs = spec.outputs
        self._output_positions = [i for i, t in enumerate(spec.tensors) if t.is_out]
        # Dimensions that give a size: a bare one (M), or one offset by a constant
        # (cu_seqlens: [B + 1]); (index, size, offset).
        self._bare = {t.name: [(i, *given) for i, d in enumerate(t.dims)
                               if (given := _size_and_offset(d))] for t in spec.tensors}
        self._derived = {t.name: [(i, d) for i, d in enumerate(t.dims) if not isinstance(d, Sym)]
                         for t in spec.tensors}
        self._symbols = set(spec.size_symbols).union(
            *(d.symbols() for t in spec.tensors for d in t.dims), *(d.symbols() for d in spec.grid))
        self._torch_dtypes: dict | None = None
        self._block = (spec.num_threads, 1, 1)
        self._grid_limits = get_target(spec.target).max_grid
        self._sm_budget = next(filter(None, map(_sm_budget, spec.grid)), None)
        # kernelParams: an array of addresses, one per entry parameter, each pointing at the
        # argument's bytes in one buffer. Built once; a call only repacks the buffer, in one
        # struct.pack_into (a quarter of the cost of one numpy write per argument).
        codes = "Q" * len(spec.tensors) + "I" * len(spec.size_symbols)
        if spec.comm:
            codes += "".join(PARAM_CODES[kind] for _, kind in COMM_PARAMS)
        layout, offsets = "=", []
        for code in codes:                 # each argument aligned to its size
            size = struct.calcsize(code)
            at = struct.calcsize(layout)
            layout += "x" * (-at % size) + code
            offsets.append(at + -at % size)
        self._arg_format = struct.Struct(layout)
        self._arg_buffer = np.zeros(max(1, self._arg_format.size), np.uint8)
        base = self._arg_buffer.ctypes.data
        self._kernel_params = np.array([base + o for o in offsets], np.uint64)
        # TMA tensor maps come last; their slots point at this call's CUtensorMaps.
        self._maps = TensorMaps(spec) if spec.tensor_maps else None
        if self._maps is not None:
            self._kernel_params = np.concatenate(
                [self._kernel_params, np.zeros(len(spec.tensor_maps), np.uint64)])
        self._kernel_params_address = self._kernel_params.ctypes.data

    @classmethod
    def from_image(cls, spec: KernelSpec, image: bytes | str) -> "Launcher":
        """A launcher for a cubin or PTX image whose entry is named `spec.name`."""
        return cls(spec, image=image)

    # -- checking -----------------------------------------------------------------------

    def bind(self, *args, require_cuda: bool = True, **kwargs) -> Bound:
        """Check a call's arguments and allocate missing outputs; no GPU needed.

        `require_cuda=False` skips the device check (for tests on CPU tensors)."""
        given = self._collect(args, kwargs)
        for name, value in given.items():
            self._check_type(self._by_name[name], value)
        sizes, source = self._bind_sizes(given)
        for name, value in given.items():
            self._check_layout(name, value)
        self._check_aliasing(given)
        device = self._check_device(given) if require_cuda else self._any_device(given)
        grid = self._grid(sizes, source, device)
        tensors = tuple([given[t.name] if t.name in given else self._allocate(t, sizes, device)
                         for t in self.spec.tensors])
        return Bound(tensors, sizes, grid, device)

    def check_tensor_maps(self, bound: Bound) -> None:
        """TMA's rules for this variant's tensor maps. Not part of `bind`: the variant for
        sizes that are multiples of 16 may describe a tensor (a TMA-stored output) that the
        variant for other sizes leaves to plain stores."""
        if self._maps is not None:
            self._maps.check(self._fail, bound.sizes)

    def _fail(self, arg: str, message: str, hint: str | None = None) -> LaunchError:
        return LaunchError(self.spec.name, arg, message, hint)

    def _collect(self, args, kwargs) -> dict:
        """Name -> argument, inputs first; outputs passed as None count as not passed."""
        if len(args) > len(self._positional):
            names = ", ".join(t.name for t in self._positional)
            raise self._fail(f"#{len(args)}", f"too many arguments: takes at most "
                             f"{len(self._positional)} ({names}), got {len(args)}")
        given = {t.name: a for t, a in zip(self._positional, args)}
        for name, value in kwargs.items():
            if name not in self._by_name:
                raise self._fail(name, "unknown argument",
                                 f"valid names: {', '.join(self._by_name)}")
            if name in given:
                raise self._fail(name, "given both by position and by keyword")
            given[name] = value
        missing = [name for name in self._input_names if name not in given]
        if missing:
            raise self._fail(", ".join(missing), f"missing input{'s' * (len(missing) > 1)}",
                             f"call {self.spec.name}({', '.join(self._input_names)})")
        # Keyword inputs may come in any order; sizes are bound from inputs first.
        return {t.name: given[t.name] for t in self._positional
                if t.name in given and not (t.is_out and given[t.name] is None)}

    def _check_type(self, t: TensorParam, value) -> None:
        import torch
        if not isinstance(value, torch.Tensor):
            raise self._fail(t.name, f"must be a torch.Tensor, got {type(value).__name__}",
                             declaration(t))
        expected = self._expected_dtype(t)
        if value.dtype != expected:
            raise self._fail(t.name, f"must be {t.dtype} ({expected}), got {value.dtype}",
                             f"convert with {t.name}.to({expected})")
        if value.dim() != len(t.dims):
            raise self._fail(t.name, f"must have {len(t.dims)} dimensions, got {value.dim()} "
                             f"(shape {tuple(value.shape)})", declaration(t))

    def _expected_dtype(self, t: TensorParam):
        if self._torch_dtypes is None:   # torch is imported on first call, not at compile time
            self._torch_dtypes = {p.name: torch_dtype(p.dtype) for p in self.spec.tensors}
        return self._torch_dtypes[t.name]

    def _bind_sizes(self, given: dict) -> tuple[dict[str, int], dict[str, str]]:
        """Size symbols from the shapes (inputs first, then passed outputs), then every other
        dim checked against them: passed ones against their shape, the shapes of outputs to
        allocate for exact division. Returns sizes and which argument set each."""
        sizes: dict[str, int] = {}
        source: dict[str, str] = {}
        for name, value in given.items():
            shape = value.shape
            for i, symbol, offset in self._bare[name]:
                have, size = sizes.get(symbol), shape[i] - offset
                if size < 0:
                    raise self._fail(name, f"dimension {i} is {shape[i]}, so size {symbol} "
                                     f"would be {size}", declaration(self._by_name[name]))
                if have is None:
                    sizes[symbol] = size
                    source[symbol] = name
                elif have != size:
                    other = source[symbol]
                    raise self._fail(name, f"size {symbol} is {size} here but {have} from "
                                     f"'{other}'", f"{declaration(self._by_name[name])}; "
                                     f"{declaration(self._by_name[other])}")
        if len(sizes) < len(self._symbols):
            self._check_all_bound(sizes)
        for symbol in self.spec.size_symbols:
            if sizes[symbol] >= U32_LIMIT:
                raise self._fail(source[symbol], f"size {symbol} = {sizes[symbol]} does not fit "
                                 "the kernel's 32-bit size parameter")
        for name, value in given.items():
            shape = value.shape
            for i, d in self._derived[name]:
                expected = self._evaluate(d, sizes, source, name)
                if shape[i] != expected:
                    value = "" if str(d) == str(expected) else f" = {expected}"
                    raise self._fail(name, f"dimension {i} must be {d}{value}, got {shape[i]} "
                                     f"(shape {tuple(shape)})", declaration(self._by_name[name])
                                     + self._scale_layout(name))
        for t in self._outputs:
            if t.name not in given:
                for _, d in self._derived[t.name]:
                    self._evaluate(d, sizes, source, t.name)
        return sizes, source

    def _scale_layout(self, name: str) -> str:
        """What a transposed scale tensor holds, for the caller who passed it row by row."""
        for t in self.spec.tensors:
            if t.quant is not None and t.quant.scale == name and t.quant.layout == "mn_major":
                if t.quant.format == "ue8m0":
                    return (f"; '{name}' holds {t.name}'s UE8M0 scales packed four to an "
                            f"i32 and transposed (quant layout = mn_major): [..., cdiv("
                            f"groups, 4), rows padded to a multiple of 4], the storage of "
                            f"DeepGEMM's get_mn_major_tma_aligned_packed_ue8m0_tensor")
                return (f"; '{name}' holds {t.name}'s scales transposed (quant layout = "
                        f"mn_major): scales of [..., rows, groups] passed as [..., groups, "
                        f"rows] with the rows padded to a multiple of 4, as DeepGEMM's "
                        f"get_col_major_tma_aligned_tensor makes them")
        return ""

    def _check_all_bound(self, sizes: dict[str, int]) -> None:
        for name in sorted(self._symbols - sizes.keys()):
            carriers = [t for t in self.spec.outputs if Sym(name) in t.dims]
            if carriers:
                raise self._fail(carriers[0].name, f"size {name} is not the size of any input; "
                                 f"pass output '{carriers[0].name}' so its shape gives {name}",
                                 declaration(carriers[0]))
            users = [t for t in self.spec.tensors if any(name in d.symbols() for d in t.dims)]
            raise self._fail(users[0].name if users else "grid",
                             f"size {name} cannot be inferred from the arguments' shapes",
                             "declare it as a whole dimension of some input")

    def _evaluate(self, d: Dim, sizes: dict[str, int], source: dict[str, str],
                  owner: str | None) -> int:
        """Evaluate a dim of tensor `owner` (None: of the grid). A failed exact division is
        blamed on the argument that set its size."""
        try:
            return d.evaluate(sizes)
        except DimError as e:
            where = declaration(self._by_name[owner]) if owner else self._grid_text()
            culprit = source[sorted(d.symbols())[0]] if d.symbols() else owner or "grid"
            raise self._fail(culprit, f"{e}, as required by {where}",
                             f"sizes here: {_sizes_text(sizes)}") from None

    def _check_layout(self, name: str, value) -> None:
        if not value.is_contiguous():
            raise self._fail(name, f"must be contiguous, got strides {value.stride()} for shape "
                             f"{tuple(value.shape)}", f"pass {name}.contiguous()")
        misaligned = value.data_ptr() % ALIGNMENT
        if misaligned:
            raise self._fail(name, f"data must be {ALIGNMENT}-byte aligned, but its address is "
                             f"{misaligned} bytes past a multiple of {ALIGNMENT}",
                             f"pass {name}.clone() (a view that starts mid-buffer keeps its offset)")

    def _check_aliasing(self, given: dict) -> None:
        """A passed output must not overlap another argument's bytes: the kernel's CTAs read
        inputs while others write outputs, in no set order. Called after `_check_layout`, so
        each tensor's bytes are the one range from its data_ptr."""
        spans = []
        for name, value in given.items():
            start = value.data_ptr()
            end = start + value.nbytes
            if start == end:                  # an empty tensor has no bytes to share
                continue
            if self._by_name[name].is_out:
                for other, other_start, other_end in spans:
                    if start < other_end and other_start < end:
                        self._aliasing_error(name, other)
            spans.append((name, start, end))

    def _aliasing_error(self, output: str, other: str) -> None:
        why = ("each output needs its own memory" if self._by_name[other].is_out
               else "in-place kernels are not supported yet")
        kind = "output" if self._by_name[other].is_out else "input"
        raise self._fail(output, f"shares memory with {kind} '{other}'; {why}",
                         f"pass a separate tensor as '{output}' (or none: the kernel "
                         "allocates it)")

    def _check_device(self, given: dict):
        first_name = first_device = None
        for name, value in given.items():
            if not value.is_cuda:
                raise self._fail(name, f"is on {value.device}; kernels take CUDA tensors",
                                 f"move it with {name}.cuda()")
            if first_name is None:
                first_name, first_device = name, value.device
            elif value.device != first_device:
                raise self._fail(name, f"is on {value.device} but '{first_name}' is on "
                                 f"{first_device}", "put all tensors on one GPU")
        if first_device is None:   # only outputs to allocate: use torch's current device
            import torch
            return torch.device("cuda", torch.cuda.current_device())
        return first_device

    def _any_device(self, given: dict):
        import torch
        for name, value in given.items():
            if value.is_meta:
                raise self._fail(name, "is on the meta device, which holds no data",
                                 f"pass a CPU tensor: {name}.to_empty(device='cpu') or "
                                 "torch.randn(...)")
        return next((v.device for v in given.values()), torch.device("cpu"))

    def _allocate(self, t: TensorParam, sizes: dict[str, int], device):
        import torch
        shape = [d.evaluate(sizes) for d in t.dims]   # _bind_sizes has evaluated each dim
        return torch.empty(shape, dtype=self._expected_dtype(t), device=device)

    def _grid(self, sizes: dict[str, int], source: dict[str, str],
              device) -> tuple[int, int, int]:
        # A persistent grid has one CTA per SM (one program when interpreting on the CPU),
        # or one per SM of its budget, which the device must have.
        env = {**sizes, SM_COUNT: 1}
        if device.type == "cuda":
            env[SM_COUNT] = driver.sm_count(device.index)
            if self._sm_budget is not None and self._sm_budget > env[SM_COUNT]:
                raise self._fail("grid", f"the kernel's SM budget sms = {self._sm_budget} is "
                                 f"more than the {env[SM_COUNT]} SMs of {device}",
                                 f"compile it with sms <= {env[SM_COUNT]}")
        grid = [self._evaluate(d, env, source, None) for d in self.spec.grid]
        grid += [1] * (3 - len(grid))
        for axis, n, limit in zip("xyz", grid, self._grid_limits):
            if n == 0:
                self._empty_grid(axis, sizes, source)
            if not 0 < n <= limit:
                raise self._fail("grid", f"{self._grid_text()}: {axis} = {n} is outside the CUDA "
                                 f"limit 1..{limit}", f"sizes here: {_sizes_text(sizes)}")
        return tuple(grid)

    def _empty_grid(self, axis: str, sizes: dict[str, int], source: dict[str, str]) -> None:
        """An empty grid launches nothing and would leave every output unwritten: an error
        naming the axis's expression and the sizes it was evaluated with."""
        d = self.spec.grid["xyz".index(axis)]
        symbols = sorted(d.symbols())
        given = "; ".join(f"{s} = {sizes[s]} from the shape of '{source[s]}'" for s in symbols)
        raise self._fail(source[symbols[0]] if symbols else "grid",
                         f"{self._grid_text()}: axis {axis} = {d} is 0"
                         f"{f' ({given})' if given else ''}; an empty grid launches nothing "
                         "and would leave the outputs unwritten",
                         "do not call the kernel when there is no work (e.g. a size of 0)")

    def _grid_text(self) -> str:
        return f"grid ({', '.join(map(str, self.spec.grid))})"

    # -- launching ----------------------------------------------------------------------

    def __call__(self, *args, **kwargs):
        """Check, launch on torch's current stream, and return the outputs: one tensor, or a
        tuple in declaration order."""
        bound = self.bind(*args, **kwargs)
        self.check_tensor_maps(bound)
        self.launch(bound)
        return self.results(bound)

    def results(self, bound: Bound):
        """The outputs of a bound call: one tensor, a tuple in declaration order, or None."""
        outputs = tuple(bound.tensors[i] for i in self._output_positions)
        if not outputs:
            return None
        return outputs[0] if len(outputs) == 1 else outputs

    def launch(self, bound: Bound) -> None:
        """Launches a call that `bind` (of this or an equally specified launcher) checked."""
        if self.spec.comm:       # its trailing parameters come from a Comm's ranks
            raise self._fail("rank", "a communication kernel launches through a Comm",
                             "load it with commdsl.api.load_comm(comm, path, kernel)")
        self.launch_checked([t.data_ptr() for t in bound.tensors],
                            [bound.sizes[name] for name in self.spec.size_symbols],
                            bound.grid, bound.device.index)

    def prepared(self, grid: tuple[int, int, int], index: int):
        """`launch(pointers, sizes)` for one grid on device `index`, everything else looked up
        now: what a repeated call pays for (runtime/callplan.py). Tensors on another device
        than torch's current one (cuda:1 without set_device) launch in their device's
        primary context, pushed for the launch, as torch's device guard does for its own
        kernels. Anything unusual (a thread without a context, a failed launch, which
        enqueues nothing) goes through `launch_checked`, which handles or reports it."""
        import torch
        cu = driver.cuda_driver()
        cu_launch, success = cu.cuLaunchKernel, cu.CUresult.CUDA_SUCCESS
        # torch's raw getters: torch.cuda.current_device() and current_stream() build Python
        # objects and cost more than the launch (Triton's launcher reads the same ones).
        current_device = torch._C._cuda_getDevice
        current_stream = torch._C._cuda_getCurrentRawStream
        pack, buffer = self._arg_format.pack_into, self._arg_buffer
        head = (self._function_on(index), *grid, *self._block, self.spec.shared_bytes)
        params = self._kernel_params_address

        maps, params_array = self._maps, self._kernel_params
        context = driver.primary_context(index)
        push, pop = cu.cuCtxPushCurrent, cu.cuCtxPopCurrent

        def launch(pointers: list[int], sizes: list[int]) -> None:
            pack(buffer, 0, *pointers, *sizes)
            if maps is not None:
                params_array[-len(maps.spec.tensor_maps):] = maps.addresses(pointers, sizes)
            if current_device() == index:
                if cu_launch(*head, current_stream(index), params, 0)[0] == success:
                    return
            elif push(context)[0] == success:
                launched = cu_launch(*head, current_stream(index), params, 0)[0] == success
                pop()
                if launched:
                    return
            self.launch_checked(pointers, sizes, grid, index)
        return launch

    def launch_checked(self, pointers: list[int], sizes: list[int],
                       grid: tuple[int, int, int], index: int, comm: tuple = ()) -> None:
        """Launches with arguments already checked: the tensors' addresses in declaration
        order, the sizes in `spec.size_symbols` order, and a communication kernel's
        COMM_PARAMS values (runtime/symmetric.py)."""
        import torch
        self.pack(pointers, sizes, comm)
        function = self._function_on(index)
        cu = driver.cuda_driver()
        if index == torch.cuda.current_device():
            result = self._launch_on(cu, function, grid, index)
            if result[0] != cu.CUresult.CUDA_ERROR_INVALID_CONTEXT:
                driver.check(result, "cuLaunchKernel")
                return
        # Another device, or a thread that has not used CUDA yet: make the context current.
        with driver.device_context(index):
            driver.check(self._launch_on(cu, function, grid, index), "cuLaunchKernel")

    def pack(self, pointers: list[int], sizes: list[int], comm: tuple = ()) -> None:
        """Writes a launch's arguments where the kernelParams array points."""
        self._arg_format.pack_into(self._arg_buffer, 0, *pointers, *sizes, *comm)
        if self._maps is not None:
            self._kernel_params[-len(self.spec.tensor_maps):] = self._maps.addresses(pointers,
                                                                                   sizes)

    def _launch_on(self, cu, function, grid: tuple[int, int, int], index: int):
        import torch
        # The raw handle of torch's current stream, without building a torch.cuda.Stream
        # (which costs more than the rest of the launch); Triton's launcher does the same.
        stream = torch._C._cuda_getCurrentRawStream(index)
        return cu.cuLaunchKernel(function, *grid, *self._block, self.spec.shared_bytes, stream,
                                 self._kernel_params_address, 0)

    def _function_on(self, index: int):
        for key in (index, None):
            if key in self._functions:
                return self._functions[key]
        if self._image is None:
            loaded = ", ".join(f"cuda:{i}" for i in self._functions)
            raise self._fail(self.spec.tensors[0].name if self.spec.tensors else "grid",
                             f"tensors are on cuda:{index} but the kernel was loaded on {loaded}",
                             "build the launcher with Launcher.from_image to load on any device")
        check_runs_on(self.spec, index)
        with driver.device_context(index):
            module = driver.load_module(self._image)
            function = driver.get_function(module, self.spec.name)
            self._prepare(function, index)
        self._functions[index] = function
        return function

    def _prepare(self, function, device: int | None) -> None:
        """Opt `function` in to the dynamic smem the kernel launches with."""
        import torch
        index = torch.cuda.current_device() if device is None else device
        nbytes = self.spec.shared_bytes
        target = device_target(index)
        if nbytes <= target.default_shared_bytes_per_block:
            return
        if nbytes > target.shared_bytes_per_block:
            raise DeviceError(
                f"kernel {self.spec.name} needs {nbytes} bytes of shared memory; cuda:{index} "
                f"({target.name}) allows at most {target.shared_bytes_per_block} per block")
        driver.set_dynamic_smem(function, nbytes)


def _sm_budget(d: Dim) -> int | None:
    """S of a grid dim holding `persistent(sms = S)`'s SM count, else None."""
    if isinstance(d, SmCount):
        return d.budget
    if isinstance(d, BinOp):
        return _sm_budget(d.lhs) or _sm_budget(d.rhs)
    return None


def _sizes_text(sizes: dict[str, int]) -> str:
    return ", ".join(f"{k}={v}" for k, v in sorted(sizes.items()))
