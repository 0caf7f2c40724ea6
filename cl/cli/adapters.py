"""Commands that move adapter versions out of the registry and into it: PEFT export and import.

Both build the base the service serves (``[model]``, which must name a checkpoint: PEFT adapters
belong to a Hugging Face model) and go through :mod:`cl.model.peft_export`.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from cl.config import Config

__all__ = ["export", "import_adapter"]


def _fail(message: str) -> int:
    print(f"cl: {message}", file=sys.stderr)
    return 1


def _no_checkpoint(config: Config, verb: str) -> str | None:
    """Why ``verb`` cannot run on this config's base (PEFT adapters belong to a Hugging Face model)."""
    if config.model.checkpoint:
        return None
    return (
        f"{verb} needs a Hugging Face base, but the service runs the {config.model.preset!r} preset; "
        "set model.checkpoint (or `cl --checkpoint DIR ...`, CL_MODEL_CHECKPOINT) to the checkpoint the "
        "adapter belongs to"
    )


def _checkpoint_base(config: Config) -> tuple[Any, str] | str:
    """The served base (one slot) and its family, or why it cannot be built."""
    from cl.model.base_model import build_base_model
    from cl.model.checkpoint import CheckpointError, read_checkpoint_config

    try:
        return build_base_model(config.model, 1), read_checkpoint_config(config.model.checkpoint).family
    except CheckpointError as e:
        return str(e)


def _registry(config: Config) -> Any:
    """The adapter registry, or None (and a message) when MLflow does not answer."""
    import urllib.request

    from cl.registry import AdapterRegistry

    uri = config.mlflow.tracking_uri
    try:
        with urllib.request.urlopen(f"{uri}/health", timeout=5.0):
            pass
    except OSError as e:
        _fail(f"MLflow does not answer at {uri} ({e}); start it with `cl up` or set CL_MLFLOW_URI")
        return None
    return AdapterRegistry(uri, config.mlflow.model_name)


def export(config: Config, args: argparse.Namespace) -> int:
    """``cl export VERSION --format peft DIR``: a registered version as a PEFT LoRA directory."""
    from cl.model.adapters import load_adapter_state
    from cl.model.peft_export import export_peft
    from cl.registry import AdapterIntegrityError

    if why := _no_checkpoint(config, "cl export"):
        return _fail(why)
    if args.version == "base":
        return _fail("version base has no adapter to export; name a registered version (`cl versions` lists them)")
    registry = _registry(config)
    if registry is None:
        return 1
    version = args.version if args.version.isdigit() else registry.alias_version(args.version)
    if version is None:
        return _fail(f"{args.version!r} is neither a version number nor an alias of {config.mlflow.model_name}")
    try:
        tags = registry.get_version(version).version_tags
        state = registry.load_adapter(version)
    except (KeyError, AdapterIntegrityError) as e:
        return _fail(f"{e.args[0] if isinstance(e, KeyError) else e}; `cl versions` lists the versions")
    if tags.base_version not in (None, config.model.base_version):
        return _fail(
            f"version {version} was trained on base {tags.base_version!r}, but [model] builds "
            f"{config.model.base_version!r}; set model.checkpoint (and lora_rank, seed) to the base it was trained on"
        )
    built = _checkpoint_base(config)
    if isinstance(built, str):
        return _fail(built)
    model, family = built
    try:
        load_adapter_state(model, 0, state)
        base = str(Path(config.model.checkpoint).resolve())
        done = export_peft(model, 0, args.dir, base, family=family, drop_unsupported=args.drop_unsupported)
    except ValueError as e:  # PeftFormatError, or an adapter of another shape
        return _fail(f"version {version}: {e}")
    print(f"wrote version {version} as a PEFT LoRA ({family}, r={model.config.lora_rank}) to {done.directory}")
    print(f"  target_modules: {', '.join(done.target_modules)}")
    for what in done.dropped:
        print(f"  dropped: {what}")
    print(f"  load it: peft.PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(BASE), {str(args.dir)!r})")
    return 0


def import_adapter(config: Config, args: argparse.Namespace) -> int:
    """``cl import-adapter DIR``: register a PEFT LoRA directory as a new adapter version."""
    from cl.model.adapters import adapter_state
    from cl.model.peft_export import CONFIG_FILE, PeftFormatError, import_peft
    from cl.versions import VersionTags

    source = Path(args.dir).resolve()
    if why := _no_checkpoint(config, "cl import-adapter"):
        return _fail(why)
    built = _checkpoint_base(config)
    if isinstance(built, str):
        return _fail(built)
    model, family = built
    try:
        done = import_peft(model, 0, source, family=family, drop_unsupported=args.drop_unsupported)
    except PeftFormatError as e:
        return _fail(str(e))
    registry = _registry(config)
    if registry is None:
        return 1
    tags = VersionTags(
        base_version=config.model.base_version,
        parent_version="",
        source="import",
        reason="imported PEFT LoRA",
        other={
            "imported_from": str(source),
            "import_format": "peft",
            "peft_base_model": str(json.loads((source / CONFIG_FILE).read_text()).get("base_model_name_or_path")),
            "peft_targets": ",".join(done.target_modules),
        },
    )
    version = registry.publish(adapter_state(model, 0), tags=tags)
    print(f"registered {source} as version {version} of {config.mlflow.model_name} (source=import)")
    for what in done.dropped:
        print(f"  dropped: {what}")
    print(f"  serve it: `cl promote {version}`")
    return 0
