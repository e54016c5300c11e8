"""The Core ML names of the spec's inputs and outputs, which coremltools may have changed.

coremltools renames a feature whose name is not a valid MIL identifier or is reserved in MIL
(`NameSanitizer` in coremltools 9.0). `state` becomes `state_workaround`, and so do type
names such as `fp16` or `tensor`. Characters other than letters, digits and `_` become `_`.
ONNX sources fix their input names, so the
spec cannot simply choose another name. The pipeline feeds and reads the program by the
names the program declares, and the report and manifest record each renaming.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Iterable, Mapping

from ..errors import CONVERSION_FAILED, ConversionError


@dataclasses.dataclass(frozen=True)
class FeatureNames:
    """Core ML input and output names by spec name; most map to themselves."""

    inputs: dict[str, str]
    outputs: dict[str, str]

    def feed(self, sample: Mapping[str, object]) -> dict:
        """Return `sample` (arrays by spec input name) keyed by Core ML input name."""
        return {self.inputs.get(name, name): value for name, value in sample.items()}

    def by_spec_name(self, results: Mapping[str, object]) -> dict:
        """Return the program's results (by Core ML output name) keyed by spec output name."""
        spec_names = {coreml: spec for spec, coreml in self.outputs.items()}
        return {spec_names.get(name, name): value for name, value in results.items()}

    def renamed(self) -> dict[str, dict[str, str]]:
        """Return the renamed features only: {"inputs": {spec: coreml}, "outputs": {...}}."""
        changes = {
            "inputs": {spec: coreml for spec, coreml in self.inputs.items() if spec != coreml},
            "outputs": {spec: coreml for spec, coreml in self.outputs.items() if spec != coreml},
        }
        return {kind: names for kind, names in changes.items() if names}


def match_feature_names(
    spec_inputs: Iterable[str],
    coreml_inputs: Iterable[str],
    spec_outputs: Iterable[str] = (),
    coreml_outputs: Iterable[str] = (),
) -> FeatureNames:
    """Match the spec's input and output names to the names the Core ML program declares.

    Raises `ConversionError(ConversionFailed)` when a spec name has no counterpart.
    """
    return FeatureNames(
        inputs=_match(list(spec_inputs), list(coreml_inputs), "inputs"),
        outputs=_match(list(spec_outputs), list(coreml_outputs), "outputs"),
    )


def _match(spec_names: list[str], coreml_names: list[str], kind: str) -> dict[str, str]:
    """Match names: equal names first, then by coremltools' renaming rule, then by position.

    The position rule applies only to the names left after the first two rules, and only
    when as many remain on each side: coremltools keeps the order of the features it is
    given, so the remaining ones correspond in order.
    """
    matched = {name: name for name in spec_names if name in coreml_names}
    unclaimed = [name for name in coreml_names if name not in matched.values()]
    for name in spec_names:
        if name in matched:
            continue
        candidate = sanitized_name(name)
        if candidate in unclaimed:
            matched[name] = candidate
            unclaimed.remove(candidate)
    remaining = [name for name in spec_names if name not in matched]
    if remaining and len(remaining) == len(unclaimed):
        matched.update(zip(remaining, unclaimed))
    elif remaining:
        raise ConversionError(
            CONVERSION_FAILED,
            f"the Core ML program's {kind} are {coreml_names}, and none of them matches"
            f" {remaining} from the spec; report this with the spec and the coremltools version",
        )
    return {name: matched[name] for name in spec_names}


def sanitized_name(name: str) -> str:
    """Return the name coremltools gives a feature called `name` (without de-duplication)."""
    from coremltools.converters.mil.mil.passes.defs.preprocess import NameSanitizer

    return NameSanitizer().sanitize_name(name)


def package_feature_names(
    package: Path, spec_inputs: Iterable[str], spec_outputs: Iterable[str] = ()
) -> FeatureNames:
    """Return the Core ML names of the spec's features as a saved package declares them."""
    import coremltools as ct

    description = ct.utils.load_spec(str(package)).description
    return match_feature_names(
        spec_inputs,
        [feature.name for feature in description.input],
        spec_outputs,
        [feature.name for feature in description.output],
    )
