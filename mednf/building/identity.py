"""What makes two builds the same build.

A build is identified by its builder spec, its engine config and its source data. Settings that change how
the work is split or saved but not its result (beyond float rounding) are left out — :data:`RESULT_NEUTRAL`,
the one list of them: a rerun that changes only those resumes an unfinished build, finds a complete one
complete, and may be given to ``--continue-to``. Everything here is compared as plain JSON values
(:func:`plain`), the form a build stores it in (``.partial/build.json``, the manifest), with one comparison,
:func:`differences`. Where the source data was read is never part of it: a source is what was read (digest
or md5, rules; :func:`source_identity`, the same for every kind).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from mednf.engine.config import EngineConfig
from mednf.sources.kinds import identity_of

# section → settings that change how the work is split or saved, not its result
RESULT_NEUTRAL: dict[str, tuple[str, ...]] = {
    "fit": ("batch_size", "memory_budget_mb"),  # how the fit is batched
    "build": ("checkpoint_every",),  # when meta-training state is saved
}


def result_neutral(section: str, key: str) -> bool:
    """Whether setting ``section.key`` (an engine section or ``build``) leaves a build's result as it is."""
    return key in RESULT_NEUTRAL.get(section, ())


def plain(value: Any) -> Any:
    """``value`` as JSON holds it (tuples as lists, keys as strings): what a stored identity reads back as."""
    if isinstance(value, Mapping):
        return {_json_key(k): plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    return value


def _json_key(key: Any) -> str:
    if isinstance(key, bool) or key is None:
        return {True: "true", False: "false", None: "null"}[key]
    return key if isinstance(key, str) else str(key)


def _without_neutral(section: str, values: Mapping[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in values.items() if not result_neutral(section, k)}


def builder_identity(builder: Mapping[str, Any]) -> dict[str, Any]:
    """A spec's ``to_dict()`` (or a manifest's ``builder``) without where its file was and the neutral
    ``[build]`` settings."""
    return plain({**builder, "path": "", "build": _without_neutral("build", builder["build"])})


def engine_identity(engine: EngineConfig | Mapping[str, Any]) -> dict[str, Any]:
    """An engine config (or its dict, as any mednf version wrote it: defaults filled in) without the neutral
    ``[fit]`` settings."""
    cfg = engine if isinstance(engine, EngineConfig) else EngineConfig.from_dict(engine)
    data = cfg.to_dict()
    return plain({**data, "fit": _without_neutral("fit", data["fit"])})


def source_identity(description: Mapping[str, Any]) -> dict[str, Any]:
    """A source description (what a read gives, or the manifest's ``source`` record) without where its data was
    read, for every kind alike (:func:`mednf.sources.kinds.identity_of`): what was read — digest or md5, rules,
    counts — is the identity; the same files elsewhere are the same source."""
    return plain(identity_of(description))


def build_identity(builder: Mapping[str, Any], engine: EngineConfig | Mapping[str, Any],
                   **parts: Any) -> dict[str, Any]:
    """What makes two builds the same: builder and engine without their neutral settings, and ``parts``
    (e.g. ``source``, a source description: by :func:`source_identity`; or ``max_samples``), as plain JSON
    values."""
    if isinstance(parts.get("source"), Mapping):
        parts = {**parts, "source": source_identity(parts["source"])}
    return {"builder": builder_identity(builder), "engine": engine_identity(engine), **plain(parts)}


def stored_identity(stored: Any) -> Any:
    """A ``build.json`` as any mednf version wrote it, in today's terms (older ones kept neutral settings)."""
    if isinstance(stored, dict) and {"builder", "engine"} <= set(stored):
        source = {"source": source_identity(stored["source"])} if isinstance(stored.get("source"), dict) else {}
        return {**stored, "builder": builder_identity(stored["builder"]), "engine": engine_identity(stored["engine"]),
                **source}
    return stored


def differences(old: Any, new: Any, prefix: str = "") -> list[str]:
    """Every setting where ``new`` differs from ``old``, as ``"engine.meta.steps: 30 → 40"``; empty when
    they are the same build."""
    if isinstance(old, dict) and isinstance(new, dict):
        return [d for k in sorted(set(old) | set(new), key=str)
                for d in differences(old.get(k), new.get(k), f"{prefix}{k}.")]
    return [] if old == new else [f"{prefix.rstrip('.')}: {old!r} → {new!r}"]
