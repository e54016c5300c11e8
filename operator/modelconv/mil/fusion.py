"""A plan pass that runs chains of elementwise ops in place, and frees values after last use.

A chain starts at an op whose result is a new tensor (`conv` or an elementwise op). Each
further op of the chain is an elementwise op that reads the previous op's output once, and
no other op reads that output. The chain runs the first op as usual, then each further op
writes into the first op's result with torch's `out=`. So mobilenet's hard-swish (`add`,
`clip`, `clip`, `mul`, `mul`) allocates one tensor instead of five, and two clips in a row
become one clamp.

The results are bit for bit those of the unfused ops, because every op of a chain keeps its
operands, their order and their dtype:

- An op joins only when its declared output dtype, the dtype of the value it takes from the
  chain and the dtype of its other operands are one floating-point dtype. torch then computes
  in that dtype and an fp16 result is rounded to fp16 at every op, as the program stores it.
- Its declared output shape must be static and equal to the chain's shape, and its other
  operands' declared shapes static and broadcastable to it, so writing in place never
  resizes. Declared shapes can be wrong (coremltools infers them again on load), so the
  fused step compares the actual shapes first and runs the unfused ops when they differ.
- `clip(clip(x, a1, b1), a2, b2)` equals `clip(x, max(a1, a2), min(b1, b2))` when both
  ranges are ordered and overlap, NaN and infinities included, so such pairs merge.

Only the top-level block is fused, and only by plans compiled without intermediates, since a
fused chain stores no value for the ops inside it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

import torch

from .errors import ExecutionError
from .program import BlockNode, ConstRef, OpNode, VarRef

Step = Callable[[dict], None]

# Elementwise op types that can write their result into the chain's tensor, with the torch
# function that accepts `out=`. The first input named is the one the op definition calls x.
_BINARY_OUT = {
    "add": torch.add,
    "sub": torch.sub,
    "mul": torch.mul,
    "real_div": torch.true_divide,
    "maximum": torch.maximum,
    "minimum": torch.minimum,
}
_MEMBER_TYPES = frozenset(_BINARY_OUT) | {"clip", "relu"}
# Op types whose result is always a newly allocated tensor, so a chain may write into it.
_HEAD_TYPES = _MEMBER_TYPES | {"conv"}


@dataclass
class ChainLink:
    """One op after the head of a chain, as data for the fused step.

    `operands` lists the op's tensor inputs in definition order: None for the chain's value,
    otherwise (is_const, const tensor or var name). `bounds` is the clip range and
    `var_shapes` the declared shapes of the var operands.
    """

    node: OpNode
    operands: list[tuple[bool, Any] | None]
    bounds: tuple[float, float] | None = None
    var_shapes: dict[str, tuple[int, ...]] = field(default_factory=dict)


def count_uses(block: BlockNode, uses: dict[str, int] | None = None) -> dict[str, int]:
    """Count how many op inputs and block outputs read each var, nested blocks included."""
    uses = {} if uses is None else uses
    for node in block.ops:
        for ref in node.inputs.values():
            for item in ref if isinstance(ref, list) else [ref]:
                if isinstance(item, VarRef):
                    uses[item.name] = uses.get(item.name, 0) + 1
        for nested in node.blocks:
            count_uses(nested, uses)
    for ref in block.outputs:
        if isinstance(ref, VarRef):
            uses[ref.name] = uses.get(ref.name, 0) + 1
    return uses


def vars_read(node: OpNode) -> set[str]:
    """Return the names of the vars an op reads, including reads inside its nested blocks."""
    names = set()
    for ref in node.inputs.values():
        for item in ref if isinstance(ref, list) else [ref]:
            if isinstance(item, VarRef):
                names.add(item.name)
    for nested in node.blocks:
        for inner in nested.ops:
            names |= vars_read(inner)
        names |= {ref.name for ref in nested.outputs if isinstance(ref, VarRef)}
    return names


class ChainFinder:
    """Decides which ops of a block join a chain, from declared types and const values.

    `plan` supplies `var_types` (declared types by var name), `resolve(ref)` (a folded var as
    a constant), `const_value(name, is_param)` and `output_dtype(mil_dtype)`, the torch dtype
    of a declared type at the plan's precision.
    """

    def __init__(self, plan, block: BlockNode, uses: dict[str, int]):
        self.plan = plan
        self.uses = uses
        self.block_outputs = {ref.name for ref in block.outputs if isinstance(ref, VarRef)}

    def can_head(self, node: OpNode) -> bool:
        return (
            node.op_type in _HEAD_TYPES and not node.blocks and len(node.outputs) == 1
            and self._chain_kind(node) is not None
        )

    def link(self, previous: OpNode, node: OpNode) -> ChainLink | None:
        """Return the link for `node` continuing a chain that ends at `previous`, or None."""
        if node.op_type not in _MEMBER_TYPES or node.blocks or len(node.outputs) != 1:
            return None
        chained = previous.outputs[0][0]
        if self.uses.get(chained, 0) != 1 or chained in self.block_outputs:
            return None
        kind = self._chain_kind(previous)
        if kind is None or self._chain_kind(node) != kind:
            return None
        if node.op_type == "clip":
            return self._clip_link(node, chained)
        if node.op_type == "relu":
            return ChainLink(node, [None]) if _is_var(node.inputs.get("x"), chained) else None
        return self._binary_link(node, chained, kind)

    def _chain_kind(self, node: OpNode) -> tuple[torch.dtype, tuple[int, ...]] | None:
        """Return the (torch dtype, static shape) of the op's output, or None if not fusable."""
        declared = node.outputs[0][1]
        if declared.dtype in ("unknown", "str") or declared.shape is None:
            return None
        if None in declared.shape:
            return None
        dtype = self.plan.output_dtype(declared.dtype)
        if dtype is None or not dtype.is_floating_point:
            return None
        return dtype, tuple(declared.shape)

    def _clip_link(self, node: OpNode, chained: str) -> ChainLink | None:
        refs = {name: self.plan.resolve(ref) for name, ref in node.inputs.items()}
        if not _is_var(refs.get("x"), chained):
            return None
        if not all(isinstance(refs.get(name), ConstRef) for name in ("alpha", "beta")):
            return None
        alpha = self.plan.const_value(refs["alpha"].name, True)
        beta = self.plan.const_value(refs["beta"].name, True)
        if not all(isinstance(bound, (int, float)) for bound in (alpha, beta)):
            return None
        return ChainLink(node, [None], (float(alpha), float(beta)))

    def _binary_link(self, node: OpNode, chained: str, kind) -> ChainLink | None:
        refs = [node.inputs.get("x"), node.inputs.get("y")]
        if sum(_is_var(ref, chained) for ref in refs) != 1 or len(node.inputs) != 2:
            return None
        dtype, shape = kind
        operands: list[tuple[bool, Any] | None] = []
        var_shapes: dict[str, tuple[int, ...]] = {}
        for ref in map(self.plan.resolve, refs):
            if _is_var(ref, chained):
                operands.append(None)
            elif isinstance(ref, ConstRef):
                value = self.plan.const_value(ref.name, False)
                if not isinstance(value, torch.Tensor) or value.dtype != dtype:
                    return None
                if not _fits(tuple(value.shape), shape):
                    return None
                operands.append((True, value))
            elif isinstance(ref, VarRef):
                declared = self.plan.var_types.get(ref.name)
                if declared is None or declared.shape is None or None in declared.shape:
                    return None
                if self.plan.output_dtype(declared.dtype) != dtype:
                    return None
                if not _fits(tuple(declared.shape), shape):
                    return None
                operands.append((False, ref.name))
                var_shapes[ref.name] = tuple(declared.shape)
            else:
                return None
        return ChainLink(node, operands, var_shapes=var_shapes)


def _is_var(ref, name: str) -> bool:
    return isinstance(ref, VarRef) and ref.name == name


def _fits(operand: tuple[int, ...], target: tuple[int, ...]) -> bool:
    """Return whether an operand of this shape broadcasts to `target` without changing it."""
    if len(operand) > len(target):
        return False
    return all(
        size in (1, full) for size, full in zip(reversed(operand), reversed(target))
    )


def merge_clips(links: list[ChainLink]) -> list[ChainLink]:
    """Merge runs of clips whose ranges are ordered and overlap into one clip each."""
    merged: list[ChainLink] = []
    for link in links:
        last = merged[-1] if merged else None
        if link.bounds is not None and last is not None and last.bounds is not None:
            low = max(last.bounds[0], link.bounds[0])
            high = min(last.bounds[1], link.bounds[1])
            ordered = last.bounds[0] <= last.bounds[1] and link.bounds[0] <= link.bounds[1]
            if ordered and low <= high:
                merged[-1] = ChainLink(link.node, [None], (low, high))
                continue
        merged.append(link)
    return merged


def make_chain_step(head_step: Step, head: OpNode, links: list[ChainLink],
                    unfused: list[Step], shape: tuple[int, ...]) -> Step:
    """Build the step that runs a chain: the head as usual, then every link in place.

    `unfused` are the links' own compiled steps, run instead when an actual shape differs
    from the declared ones the chain was planned for.
    """
    head_name = head.outputs[0][0]
    last_name = links[-1].node.outputs[0][0]
    shape = torch.Size(shape)
    kernels = [(link.node, _link_kernel(link)) for link in merge_clips(links)]
    checked_vars = [
        (name, torch.Size(declared)) for link in links for name, declared in link.var_shapes.items()
    ]

    def step(env: dict) -> None:
        head_step(env)
        buffer = env[head_name]
        if buffer.shape != shape or any(env[var].shape != size for var, size in checked_vars):
            for member in unfused:
                member(env)
            return
        del env[head_name]
        for node, kernel in kernels:
            try:
                kernel(buffer, env)
            except Exception as error:  # reported with the op, as the unfused step does
                raise ExecutionError(
                    node.op_type, node.name, f"{type(error).__name__}: {error}"
                ) from error
        env[last_name] = buffer

    return step


def _link_kernel(link: ChainLink) -> Callable[[torch.Tensor, dict], None]:
    op_type = link.node.op_type
    if op_type == "clip":
        low, high = link.bounds
        return lambda buffer, env: torch.clamp(buffer, low, high, out=buffer)
    if op_type == "relu":
        return lambda buffer, env: buffer.relu_()
    function = _BINARY_OUT[op_type]
    first, second = link.operands
    if first is None:
        return _binary_kernel(function, second, chained_first=True)
    return _binary_kernel(function, first, chained_first=False)


def _binary_kernel(function, other: tuple[bool, Any], chained_first: bool):
    is_const, value = other
    if is_const:
        if chained_first:
            return lambda buffer, env: function(buffer, value, out=buffer)
        return lambda buffer, env: function(value, buffer, out=buffer)
    if chained_first:
        return lambda buffer, env: function(buffer, env[value], out=buffer)
    return lambda buffer, env: function(env[value], buffer, out=buffer)


def fuse_chains(plan, block: BlockNode, compiled: list[tuple[OpNode, Step]]):
    """Group the compiled ops of `block` into chains; return (ops, step) per group."""
    finder = ChainFinder(plan, block, count_uses(block))
    groups: list[tuple[list[OpNode], Step]] = []
    index = 0
    while index < len(compiled):
        head, step = compiled[index]
        links: list[ChainLink] = []
        unfused: list[Step] = []
        if finder.can_head(head):
            previous = head
            for node, member_step in compiled[index + 1:]:
                link = finder.link(previous, node)
                if link is None:
                    break
                links.append(link)
                unfused.append(member_step)
                previous = node
        if links:
            shape = tuple(head.outputs[0][1].shape)
            step = make_chain_step(step, head, links, unfused, shape)
        groups.append(([head] + [link.node for link in links], step))
        index += 1 + len(links)
    return groups


def release_after_last_use(block: BlockNode, groups):
    """Pair each group's step with the vars no later step reads; return the schedule.

    Block outputs are never released. Reads inside nested blocks count as reads by the op
    that owns the blocks, so a loop body never loses a value it reads on a later iteration.
    """
    kept = {ref.name for ref in block.outputs if isinstance(ref, VarRef)}
    last_read: dict[str, int] = {}
    for index, (nodes, _) in enumerate(groups):
        for node in nodes:
            for name in vars_read(node):
                last_read[name] = index
    released: list[list[str]] = [[] for _ in groups]
    for name, index in last_read.items():
        if name not in kept:
            released[index].append(name)
    for index, (nodes, _) in enumerate(groups):
        for node in nodes:
            released[index].extend(
                name for name, _ in node.outputs if name not in last_read and name not in kept
            )
    return [(step, tuple(names)) for (_, step), names in zip(groups, released)]
