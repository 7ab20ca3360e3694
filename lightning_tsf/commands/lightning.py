"""``tsf fit|validate|test|predict --config experiments/<file>.yaml``: LightningCLI for TimeSformer.

On top of LightningCLI:

* ``data.num_classes``/``data.class_names`` are linked into the model (read once, by
  ``VideoDataModule.class_names``, before the model is built); ``data.clips.num_frames`` and
  ``data.clips.crop_size`` into the backbone's ``num_frames``/``img_size``,
  ``data.clips.mean``/``std`` into the model's.
* Earlier flat ``data.*`` keys (``data.num_frames``) in ``--config`` files and on the command
  line are moved to their groups, one line each naming the new key.
* Fail fast: unknown keys and wrong types are jsonargparse errors naming the key; a missing data
  path, ``model.pretrained`` or ``--ckpt_path`` file is reported before any model is built.
* One run folder, ``trainer.default_root_dir``: checkpoints (``<root>/checkpoints`` when the
  checkpoint callback has no ``dirpath``), logger files (when a logger's ``save_dir`` is ``.``)
  and the resolved ``config.yaml``; the config is also sent to the logger (W&B).
* ``trainer.precision: null`` picks ``bf16-mixed`` on GPUs that support it (``16-mixed`` on
  others) and ``32-true`` on CPU.
* Quiet: the notes of Lightning and W&B a user cannot act on are silenced at their source
  (:mod:`lightning_tsf.train.quiet`); ``--verbose`` (or ``TSF_VERBOSE=1``) shows them. The
  progress bar shows host values (:class:`~lightning_tsf.train.callbacks.HostValuesBar`).
* Secrets stay in the process: values of secret-named keys (``data.storage.options``'
  ``aws_secret_access_key``, any ``*token*``, ``*password*``...) are written as ``***`` to
  ``config.yaml``, the loggers (W&B config, ``hparams.yaml``) and checkpoints, the command line
  is never echoed, and one given on it is scrubbed from ``sys.argv`` (W&B records it) with a
  warning to use the environment instead (other users see a process's arguments).
* One run per folder: the launching process holds ``<root>/.tsf-run.lock``
  (:mod:`~lightning_tsf.train.runlock`); a second run there exits 2 naming the live one.
"""

from __future__ import annotations

import os
import sys
import warnings
from pathlib import Path
from typing import Any

import torch
from pytorch_lightning.cli import LightningCLI, SaveConfigCallback

from lightning_tsf.data.annotations import AnnotationError
from lightning_tsf.data.datamodule import VideoDataModule
from lightning_tsf.data.inputs import InputConfig
from lightning_tsf.data.options import upgrade, upgrade_args
from lightning_tsf.data.shard_format import ShardError
from lightning_tsf.data.storage import (
    REDACTED,
    StorageError,
    is_remote,
    is_secret_key,
    redact,
    scrub,
    secret_values,
)
from lightning_tsf.models import CheckpointError, zoo
from lightning_tsf.models.checkpoint import read_checkpoint
from lightning_tsf.train.callbacks import (
    BatchSplitError,
    GlobalBatchSize,
    hpc_checkpoints,
    latest_checkpoint,
    use_host_values_bar,
)
from lightning_tsf.train.module import VideoClassifier
from lightning_tsf.train.quiet import VERBOSE_ENV, quiet_libraries, quiet_loggers
from lightning_tsf.train.runlock import RunLock, RunLockError, is_launching_process

SPECIAL_CKPT = {"last", "best", "hpc", "registry", "latest"}
# What reading the data (class names, annotations, shard indexes, storage) may raise.
DATA_ERRORS = (FileNotFoundError, AnnotationError, ShardError, StorageError)


def upgrade_data_keys(args: list[str]) -> list[str]:
    """Earlier flat ``data.*`` keys moved to their groups (:func:`~lightning_tsf.data.options.
    upgrade`) on the command line and in ``--config`` YAML files, one stderr line per key."""
    import yaml

    args, notes = upgrade_args(args)
    for i, arg in enumerate(args):
        flag, eq, value = arg.partition("=")
        if flag != "--config" or (not eq and i + 1 >= len(args)):
            continue
        path = Path(value if eq else args[i + 1])
        if not path.is_file():
            continue
        config = yaml.safe_load(path.read_text())
        if not isinstance(config, dict) or not isinstance(config.get("data"), dict):
            continue
        config["data"], moved = upgrade(config["data"])
        if moved:
            text = yaml.safe_dump(config, sort_keys=False)
            args[i : i + (1 if eq else 2)] = [f"--config={text}"] if eq else ["--config", text]
            notes += [f"{note} (in {path})" for note in moved]
    for note in notes:
        print(f"tsf: {note}", file=sys.stderr)
    return args


class ConfigError(Exception):
    """A configuration problem found before training: printed as ``tsf: error: ...``."""


def redact_config(config: Any) -> Any:
    """A copy of a jsonargparse config with every secret-named value ``***`` (nested
    namespaces, dicts such as ``data.storage.options`` and lists of class configs)."""
    if isinstance(config, list | tuple):
        return type(config)(redact_config(v) for v in config)
    if not hasattr(config, "clone") or not hasattr(config, "keys"):
        return redact(config)
    cfg = config.clone()
    for key in list(cfg.keys()):
        value = cfg[key]
        if is_secret_key(key.rsplit(".", 1)[-1]) and value not in (None, ""):
            cfg[key] = REDACTED
        elif isinstance(value, dict | list | tuple):
            cfg[key] = redact_config(value)
    return cfg


class LoggedSaveConfigCallback(SaveConfigCallback):
    """Saves ``config.yaml`` in the run folder (re-usable as input: values linked from the data
    are left out) and records the resolved config in the loggers with the values the model was
    built with (class count and names from the data) and the data's ``protocol``. Both with
    secrets as ``***`` (:func:`redact_config`): a run's files and loggers hold no credential,
    and a config reused as input finds them in the environment again."""

    def setup(self, trainer: Any, pl_module: Any, stage: str) -> None:
        config = self.config
        self.config = redact_config(config)
        try:
            super().setup(trainer, pl_module, stage)
        finally:
            self.config = config

    def save_config(self, trainer: Any, pl_module: Any, stage: str) -> None:
        config = self.config.as_dict()
        if isinstance(pl_module, VideoClassifier):
            model = config.setdefault("model", {})
            net = model.setdefault("net", {}).setdefault("init_args", {})
            net["num_classes"] = pl_module.net.num_classes
            net["num_frames"], net["img_size"] = pl_module.net.num_frames, pl_module.net.img_size
            model["class_names"] = pl_module.hparams.class_names
        if isinstance(trainer.datamodule, VideoDataModule):
            config["protocol"] = trainer.datamodule.protocol()
        for logger in trainer.loggers:
            logger.log_hyperparams({"config": config})


def resolve_precision(trainer_cfg: Any) -> str:
    """``bf16-mixed``/``16-mixed`` when training on CUDA, else ``32-true``."""
    accelerator = str(trainer_cfg.get("accelerator") or "auto")
    if accelerator in {"auto", "gpu", "cuda"} and torch.cuda.is_available():
        return "bf16-mixed" if torch.cuda.is_bf16_supported() else "16-mixed"
    return "32-true"


def _init_args(items: Any) -> list[Any]:
    if items is None or isinstance(items, bool):
        return []
    items = items if isinstance(items, list) else [items]
    return [(str(c.get("class_path", "")), c.get("init_args")) for c in items if c is not None]


class TSFCLI(LightningCLI):
    """LightningCLI with the links, checks and run-folder defaults described in the module doc."""

    def __init__(self, args: list[str] | None = None, run: bool = True) -> None:
        # The module normalises uint8 batches in ``on_after_batch_transfer`` on purpose.
        warnings.filterwarnings("ignore", message="You have overridden `on_after_batch_transfer`")
        # Lightning warns when ``args`` and ``sys.argv`` are both given, printing both: the
        # command line, with any secret on it. ``tsf`` passes its own arguments on purpose.
        warnings.filterwarnings("ignore", message="LightningCLI's args parameter")
        self._lock_run = run  # TSFCLI(run=False): the caller runs the Trainer, and locks
        self._run_lock: RunLock | None = None
        given = list(sys.argv[1:] if args is None else args)
        upgraded = upgrade_data_keys(given)
        args = upgraded if args is not None or upgraded != given else None
        try:
            super().__init__(
                VideoClassifier,
                VideoDataModule,
                save_config_callback=LoggedSaveConfigCallback,
                save_config_kwargs={"overwrite": True},
                parser_kwargs={"default_env": False},
                args=args,
                run=run,
                auto_configure_optimizers=False,
            )
        finally:
            if self._run_lock is not None:
                self._run_lock.release()

    @staticmethod
    def subcommands() -> dict[str, set[str]]:
        """LightningCLI's, with ``Trainer.validate/test(verbose=...)`` left to its default
        (the results table is printed): ``--verbose`` is tsf's own in every command."""
        return {name: skip | ({"verbose"} if name in ("validate", "test") else set())
                for name, skip in LightningCLI.subcommands().items()}  # fmt: skip

    def add_arguments_to_parser(self, parser: Any) -> None:
        parser.add_argument("--verbose", action="store_true",
                            help="show every note of Lightning and W&B (also: TSF_VERBOSE=1)")
        parser.link_arguments("data.clips.num_frames", "model.net.init_args.num_frames")
        parser.link_arguments("data.clips.crop_size", "model.net.init_args.img_size")
        parser.link_arguments("data.clips.mean", "model.mean")
        parser.link_arguments("data.clips.std", "model.std")
        parser.link_arguments(
            "data.num_classes", "model.net.init_args.num_classes", apply_on="instantiate"
        )
        parser.link_arguments("data.class_names", "model.class_names", apply_on="instantiate")

    def before_instantiate_classes(self) -> None:
        cfg = self.config[self.subcommand] if self.subcommand else self.config
        if cfg.get("verbose"):
            os.environ[VERBOSE_ENV] = "1"  # and so in every process the run starts
        quiet_libraries()
        self.check_paths(cfg)
        trainer = cfg.trainer
        if trainer.get("precision") is None:
            trainer.precision = resolve_precision(trainer)
        if self.subcommand in ("fit", None):  # None: TSFCLI(run=False), then trainer.fit
            self.plan_batch(cfg)
        if cfg.data.loader.get("seed") is None and cfg.get("seed_everything") is not None:
            cfg.data.loader.seed = int(cfg.seed_everything)  # the loader's draws follow it
        self.keep_secrets(cfg)
        root = trainer.get("default_root_dir")
        if not root:
            return
        if self._lock_run and is_launching_process():  # before anything is written there
            self._run_lock = RunLock(root, f"tsf {self.subcommand or 'fit'}")
            self._run_lock.acquire()
        for class_path, init in _init_args(trainer.get("callbacks")):
            if class_path.endswith("ModelCheckpoint") and init.get("dirpath") is None:
                init.dirpath = str(Path(root) / "checkpoints")
        for _, init in _init_args(trainer.get("logger")):
            if init is not None and str(init.get("save_dir", "")) == ".":
                init.save_dir = str(root)

    @staticmethod
    def keep_secrets(cfg: Any) -> None:
        """A secret given on the command line is visible to other users (``ps``) and would be
        recorded by W&B (it saves ``sys.argv``): scrub it from ``sys.argv`` and say, once, to
        pass it through the environment or a credentials file instead."""
        secrets = secret_values(cfg.as_dict())
        if not any(value in arg for value in secrets for arg in sys.argv):
            return
        sys.argv[:] = [scrub(arg, secrets) for arg in sys.argv]
        print("tsf: warning: a credential was given on the command line, where other users "
              "of this machine can read it (ps); set AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, "
              "a credentials file or AWS_PROFILE instead (README)", file=sys.stderr)  # fmt: skip

    def after_instantiate_classes(self) -> None:
        """What Lightning logs as hyperparameters (W&B config, ``hparams.yaml``) with secrets
        as ``***``; the objects keep the real values."""
        super().after_instantiate_classes()
        for obj in (self.model, self.datamodule):
            initial = getattr(obj, "_hparams_initial", None)
            if initial is not None:
                obj._hparams_initial = redact(initial)

    @staticmethod
    def plan_batch(cfg: Any) -> None:
        """The batch plan, decided once before anything is built and written into the config
        (so into ``config.yaml``): ``GlobalBatchSize``'s per-device batch (at most
        ``data.batch_size``), ``trainer.accumulate_grad_batches`` and ``model.lr_scale`` for
        the devices the Trainer config asks for. Raises :class:`BatchSplitError` when none."""
        for class_path, init in _init_args(cfg.trainer.get("callbacks")):
            if class_path.endswith("GlobalBatchSize"):
                callback = GlobalBatchSize(**dict(init or {}))
                devices = configured_world_size(cfg.trainer)
                batch, accumulate, lr_scale = callback.plan(devices, int(cfg.data.batch_size))
                cfg.data.batch_size = batch
                cfg.trainer.accumulate_grad_batches = accumulate
                cfg.model.lr_scale = lr_scale

    @staticmethod
    def check_paths(cfg: Any) -> None:
        """Files named in the config that must exist before anything is built; ``pretrained``
        only without ``ckpt_path`` (a checkpoint's weights replace it, and LightningCLI puts the
        checkpoint's saved ``pretrained`` back into the config: its file may be long gone)."""
        data_root = cfg.data.get("data_root")
        if data_root and not is_remote(data_root) and not Path(data_root).exists():
            raise ConfigError(f"data.data_root: path does not exist: {data_root}")
        pretrained = None if cfg.get("ckpt_path") else cfg.model.get("pretrained")
        if pretrained and str(pretrained).startswith(zoo.PREFIX):
            try:
                zoo.entry(str(pretrained).removeprefix(zoo.PREFIX))
            except KeyError as err:
                raise ConfigError(f"model.pretrained: {err.args[0]}") from err
        elif pretrained and not Path(pretrained).is_file():
            raise ConfigError(
                f"model.pretrained: file does not exist: {pretrained} (`tsf weights list` shows "
                "the checkpoints that `zoo:NAME` downloads)"
            )
        ckpt = cfg.get("ckpt_path")
        if ckpt and str(ckpt) not in SPECIAL_CKPT and not Path(ckpt).is_file():
            raise ConfigError(f"ckpt_path: file does not exist: {ckpt}")

    def before_fit(self) -> None:
        """Stop before any process is spawned when the global batch cannot be met or the
        annotations cannot be read (one line, exit 2); resolve ``--ckpt_path=latest`` (see
        :func:`~lightning_tsf.train.callbacks.latest_checkpoint`)."""
        self._read_data("fit")
        for callback in self.trainer.callbacks:
            if isinstance(callback, GlobalBatchSize):
                callback.check(self.trainer.world_size, self.datamodule.batch_size,
                               self.trainer.accumulate_grad_batches)  # fmt: skip
        kwargs = self.config_init["fit"]
        if kwargs.get("ckpt_path") == "latest":
            found = latest_checkpoint(self.trainer.default_root_dir)
            kwargs["ckpt_path"] = str(found) if found else None
            what = f"resuming from {found}" if found else "no checkpoint to resume: fresh start"
            print(f"tsf: {what}", file=sys.stderr)
        self.model.resuming = bool(kwargs.get("ckpt_path"))
        if self.trainer.local_rank == 0:  # the others load it in setup, once it is there
            self._load_pretrained()
        self.check_folder_is_this_runs(kwargs.get("ckpt_path"))

    def check_folder_is_this_runs(self, ckpt_path: str | None) -> None:
        """A fit that does not continue the run whose checkpoints are in its folder (no
        ``--ckpt_path``, or one from elsewhere) stops here: its ``config.yaml`` would sit beside
        the other run's checkpoints and ``--ckpt_path latest`` could resume them later."""
        cfg = self.config[self.subcommand] if self.subcommand else self.config
        root = Path(self.trainer.default_root_dir).absolute()
        if not cfg.trainer.get("default_root_dir") or str(ckpt_path) in SPECIAL_CKPT:
            return  # "last", "hpc", ...: Lightning's names for this folder's checkpoints
        if not ckpt_path and hpc_checkpoints(root):
            return  # Lightning resumes a SLURM pre-emption checkpoint by itself
        folders = {Path(c.dirpath) for c in self.trainer.checkpoint_callbacks
                   if getattr(c, "dirpath", None)}  # fmt: skip
        found = sorted(p for f in folders | {root} if f.is_dir() for p in f.glob("*.ckpt"))
        if not found:
            return
        if ckpt_path and any(Path(ckpt_path).absolute().is_relative_to(f.absolute())
                             for f in folders | {root}):  # fmt: skip
            return  # continuing this folder's run
        names = ", ".join(str(p.relative_to(root) if p.is_relative_to(root) else p)
                          for p in found[:3])  # fmt: skip
        raise ConfigError(
            f"{root}: holds checkpoints of an earlier run ({names}); continue it with "
            "--ckpt_path latest, or give this run its own trainer.default_root_dir (or move "
            "them away)"
        )

    def _load_pretrained(self) -> None:
        """``model.pretrained`` fetched and loaded here, in the launching process, so that a
        missing or broken file stops the command with one line (not when resuming)."""
        if self.model.pretrained_due():
            try:
                self.model.load_pretrained(download=True)
            except (zoo.ZooError, CheckpointError, FileNotFoundError) as err:
                raise ConfigError(f"model.pretrained: {err}") from err

    def _before_evaluation(self) -> None:
        """``test``/``validate``/``predict``: the data's evaluation views are the input record
        of what is evaluated, a ``--ckpt_path`` checkpoint's record, else the zoo record of a
        ``zoo:`` ``pretrained`` (loaded here; evaluation options the config sets still win,
        each value that differs from the config's is said on stderr). Then the split is read,
        so a bad line stops the run before a logger starts."""
        ckpt = self.config_init[self.subcommand].get("ckpt_path")
        record: InputConfig | None = None
        if ckpt and Path(str(ckpt)).is_file():
            saved = read_checkpoint(str(ckpt), mmap=True).get("input_config")
            record = InputConfig.from_dict(saved, str(ckpt)) if isinstance(saved, dict) else None
        elif not ckpt:
            self._load_pretrained()
            pretrained = str(self.model.hparams.get("pretrained") or "")
            if pretrained.startswith(zoo.PREFIX):
                record = zoo.entry(pretrained.removeprefix(zoo.PREFIX)).input_config
        if not isinstance(self.datamodule, VideoDataModule):
            return
        if record is not None:
            for line in self.datamodule.evaluate_as(record):
                print(f"tsf: from the input record: {line}", file=sys.stderr)
            print(f"tsf: evaluating with {self.datamodule.input_config.describe()} (the "
                  "input record of what is evaluated)", file=sys.stderr)  # fmt: skip
        self._read_data(self.subcommand)

    def _read_data(self, stage: str) -> None:
        """The annotations (or shard indexes) of ``stage`` read now, in the launching process:
        a missing file or a bad line becomes a one-line :class:`ConfigError`."""
        if isinstance(self.datamodule, VideoDataModule):
            try:
                self.datamodule.setup(stage)
            except DATA_ERRORS as err:
                raise ConfigError(str(err)) from err

    before_validate = before_test = before_predict = _before_evaluation

    def instantiate_trainer(self, **kwargs: Any) -> Any:
        """The Trainer, its progress bar showing host values (no per-step device read), its
        W&B loggers without the arguments W&B warns about."""
        trainer = super().instantiate_trainer(**kwargs)
        use_host_values_bar(trainer)
        quiet_loggers(trainer.loggers)
        return trainer

    def instantiate_classes(self) -> None:
        """Build data first (the links need ``num_classes``), then model and trainer; a bad
        path or value becomes a one-line :class:`ConfigError`."""
        try:
            super().instantiate_classes()
        except (*DATA_ERRORS, CheckpointError, zoo.ZooError) as err:
            raise ConfigError(str(err)) from err


def configured_world_size(trainer_cfg: Any) -> int:
    """Processes a Trainer of this config runs: devices per node (a count, a list or a
    ``"0,1"`` string of ids; ``auto``/-1: every visible GPU when training on one, else 1, as
    Lightning resolves them) times ``num_nodes``."""
    devices = trainer_cfg.get("devices", "auto")
    nodes = int(trainer_cfg.get("num_nodes") or 1)
    if isinstance(devices, str) and devices.strip() not in ("auto", "-1"):
        ids = [d for d in devices.split(",") if d.strip()]
        devices = ids if "," in devices else int(devices)
    if isinstance(devices, list | tuple):
        return len(devices) * nodes
    if devices in ("auto", -1, "-1"):
        accelerator = str(trainer_cfg.get("accelerator") or "auto")
        gpus = torch.cuda.device_count() if torch.cuda.is_available() else 0
        return (gpus if accelerator in ("auto", "gpu", "cuda") and gpus else 1) * nodes
    return int(devices) * nodes


def cli_main(argv: list[str] | None = None) -> int:
    """Run ``TSFCLI`` on ``argv`` (``[subcommand, ...]``, default the process's arguments);
    config errors exit 2 with a message."""
    cli = None
    try:
        cli = TSFCLI(args=list(sys.argv[1:] if argv is None else argv))
    except (ConfigError, BatchSplitError, AnnotationError, zoo.ZooError, CheckpointError,
            StorageError, ShardError, RunLockError) as err:  # fmt: skip
        # StorageError also mid-fit (the shard stream's faults): the last checkpoint is whole
        # (written atomically), so `--ckpt_path latest` continues once the cause is fixed
        line = (str(err).splitlines() or [repr(err)])[0]
        print(f"tsf: error: {line}", file=sys.stderr)
        return 2
    finally:
        if cli is not None:
            finish_wandb(cli.trainer)
    return 0


def finish_wandb(trainer: Any) -> None:
    """Close the trainer's W&B run so an in-process caller finds its files complete."""
    for logger in trainer.loggers:
        run = getattr(logger, "_experiment", None)
        if run is not None and hasattr(run, "finish"):
            run.finish()


def _subcommand(name: str) -> Any:
    def main(argv: list[str]) -> int:
        return cli_main([name, *argv])

    main.__doc__ = f"``tsf {name} ...``"
    return main


fit_main = _subcommand("fit")
validate_main = _subcommand("validate")
test_main = _subcommand("test")
predict_main = _subcommand("predict")
