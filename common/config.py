"""The one typed run configuration, parsed from ``[tool.flwr.app.config]``.

Flower delivers run-config values typed by their TOML literal (``1`` is an int, ``1.0`` a
float, ``"x"`` a string). Parsing is strict: a string never becomes a number, a bool never
becomes an int; an int is accepted where a float is expected. An unknown key or a bad
value raises :class:`ConfigError` whose message is one line per problem, naming the key.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from common.defences import DEFAULT_DEFENCE, DEFENCES, Defence, get_defence
from common.encodings import DEFAULT_ENCODING, ENCODINGS, Encoding, get_encoding
from common.node_local import check_node_local, floats, parse_shape
from common.partition import PARTITIONERS, Partitioner, get_partitioner

__all__ = ["ConfigError", "RunConfig", "parse_run_config"]


class ConfigError(ValueError):
    """A run configuration that cannot be used; the message names every bad key."""


class RunConfig(BaseModel):
    """Settings of one run. Field names are the TOML keys with ``-`` replaced by ``_``."""

    model_config = ConfigDict(
        extra="forbid",
        strict=True,
        frozen=True,
        populate_by_name=True,
        alias_generator=lambda name: name.replace("_", "-"),
        allow_inf_nan=False,  # tau = inf would silently switch the noise off
    )

    # What to run.
    strategy: Literal["one-shot-mixup", "fedprox", "fedavg", "local-only"] = Field(
        "one-shot-mixup", description=(
            '`"one-shot-mixup"` (one release per party, the server trains), `"fedprox"` or `"fedavg"` (iterative), '
            'or `"local-only"` (a reference point: each party trains alone on its own rows, the server only '
            'evaluates every party\'s model)'
        )
    )
    dataset: Literal["digits", "mnist", "cifar10", "cifar100", "tiny-imagenet"] = Field(
        "digits", description=(
            "`digits` (scikit-learn's bundled 8x8 digits, 1,797 images in [0, 1], offline), `mnist`, `cifar10`, "
            '`cifar100`, `tiny-imagenet`'
        )
    )
    data_dir: str = Field(
        "", description=(
            "absolute folder of a local copy: torchvision's layout (`MNIST/raw/`, `cifar-10-batches-py/`, "
            '`cifar-100-python/`) or `tiny-imagenet-200/` (or that folder itself)'
        )
    )
    download: bool = Field(False, description=(
            'let torchvision download MNIST/CIFAR into `data-dir` when absent (needs internet; Tiny-ImageNet is '
            'never downloaded)'
        ))
    test_fraction: float = Field(
        0.2, gt=0, lt=1, description=(
            'digits only: share held out as the global test set, stratified, fixed split seed 0. Image sets use '
            'their official test split (Tiny-ImageNet: `val/`)'
        )
    )

    # How the data is spread over the parties (one party per SuperNode).
    partitioner: str = Field(
        "dirichlet", description=(
            '`"dirichlet"`: equal party sizes, per-class proportions from Dir(beta); `"size-skew"`: one data-poor'
            ' party (equation 5)'
        )
    )
    beta: float = Field(1.0, gt=0, description='Dirichlet concentration; smaller = stronger label skew')
    rho: float = Field(1.0, gt=0, le=1, description='size-skew only: n_poor / n_rich, in (0, 1]')
    poor_party: int = Field(0, ge=0, description='size-skew only: index of the data-poor party')
    min_party_size: int = Field(10, ge=4, description='smallest party allowed (a party needs samples to mix and to validate)')
    val_fraction: float = Field(
        0.1, gt=0, lt=0.5, description="share of each party's data held out for model selection (never the test set)"
    )
    seed: int = Field(0, ge=0, description='seed of partitioning, validation split, mixing, initialisation and batch order')

    # Node-local data: every party brings its own (deployment); the contract all must agree on.
    data_source: Literal["partition", "node-local"] = Field(
        "partition", description=(
            '`"partition"`: each party is a partition of `dataset` (simulation, the paper\'s tables). '
            '`"node-local"`: each SuperNode reads its own data from its node config\'s `data-path` (and '
            '`data-format`: `image-folder`, `npz`, `torchvision`); the keys below state what every party\'s data '
            'must look like, and nothing about a party\'s rows follows from the run config'
        )
    )
    classes: str = Field(
        "", description=(
            'node-local: the class names in order, comma-separated (image-folder subfolders and npz string '
            'labels name them); empty = only `num-classes`, labels are indices `0..num-classes-1`'
        )
    )
    num_classes: int = Field(0, ge=0, description='node-local: number of classes (0 = as many as `classes` names)')
    input_kind: Literal["image", "vector"] = Field(
        "image", description='node-local: `image` (uint8 pixels, channels x height x width) or `vector` (float rows)'
    )
    input_shape: str = Field(
        "", description='node-local: shape of one sample, e.g. `3x32x32` (image: channels 1 or 3) or `64` (vector)'
    )
    unknown_classes: Literal["refuse", "drop"] = Field(
        "refuse", description=(
            'node-local: a party holding a class the run does not name refuses (`refuse`, naming the class) or '
            'leaves those rows out and counts them (`drop`)'
        )
    )
    image_mean: str = Field("0.5", description='node-local images: per-channel mean after /255, one value or one per channel')
    image_std: str = Field("0.5", description='node-local images: per-channel std after /255, one value or one per channel')
    vector_range: str = Field(
        "0,1", description=(
            'node-local vectors: `lo,hi`, the valid range of every value (the clamped mode clips to it; a party '
            'holding a value outside refuses)'
        )
    )
    local_test_fraction: float = Field(
        0.2, gt=0, lt=0.5, description=(
            'node-local without `server-test-path`: share of each party\'s own data held out as its test part '
            '(drawn from `seed` and the party\'s data); the summary reports the size-weighted federated test '
            'accuracy and each party\'s'
        )
    )
    server_test_path: str = Field(
        "", description=(
            'node-local: absolute path of labelled test data on the server\'s machine; when set the server '
            'evaluates on it and the parties hold out no test part'
        )
    )
    server_test_format: Literal["image-folder", "npz", "torchvision"] = Field(
        "image-folder", description='format of `server-test-path` (as a party\'s `data-format`)'
    )
    backbone_sha256: str = Field(
        "", description=(
            'with a backbone and `backbone-weights` a file path: the SHA-256 of that file (as `sha256sum` prints '
            'it); every party (and the server) reads the file from its own disk and refuses another one, naming '
            'both hashes. Required for node-local backbone runs'
        )
    )

    # Singularized mixup (Algorithm 1, Theorem 2).
    tau: float = Field(1e-6, gt=0, description="Theorem 2's directional-SNR target")
    alpha: float = Field(0.7, gt=0.5, lt=1, description="largest mixing weight, 1/2 < alpha < 1 (0.7 as in the authors' code)")
    noise_mode: Literal["strict", "clamped"] = Field(
        "clamped", description=(
            '`"strict"`: Theorem 2\'s noise as calibrated; `"clamped"`: noisy partner clipped to the data\'s valid '
            "range before mixing (the authors' code)"
        )
    )
    secure_rng: bool = Field(
        False, description=(
            "draw all mixing randomness (partners, weights, noise) from the operating system's CSPRNG "
            '(`os.urandom`) instead of `seed`: what a deployment must use; not reproducible. A SuperNode started '
            'with node config `require-secure-rng=true` refuses runs without it'
        )
    )
    release_guard: float = Field(
        1e-6, gt=0, description=(
            "a party refuses to send a release in which a row lies within this share of its data's RMS row norm "
            'of one of its private rows (raw data must never leave); the error names the row'
        )
    )
    mf_formula: Literal["paper", "paper-code"] = Field(
        "paper", description=(
            '`"paper"`: Theorem 2\'s `m_f`; `"paper-code"`: the authors\' code, which omits the `sqrt(d)` factor '
            '(radius `sqrt(d)` times smaller, no Theorem 2 guarantee)'
        )
    )
    upload_dtype: Literal["float32", "float16"] = Field(
        "float32", description=(
            'dtype of the uploaded mixed inputs: `float32` or `float16` (half the bytes; a release that would '
            'overflow float16 is refused, not sent as inf)'
        )
    )
    release: Literal["once", "per-epoch"] = Field(
        "once",
        description=(
            'one-shot only. `"once"`: each party mixes its data once and uploads it in one message (the paper\'s '
            'protocol; every private training sample is the clean component of exactly one released row). '
            '`"per-epoch"`: the server asks for fresh mixtures of the same private data before every central '
            "epoch (as the paper's code trains): `central-epochs` uploads per party, and every private sample is "
            'exposed `central-epochs` times (the summary reports it)'
        ),
    )
    central_epochs: int = Field(100, ge=1, le=10_000,
                                description="epochs of the server's training on the union (one-shot), at most 10,000")
    encoding: str = Field(
        "singularized", description=(
            'one-shot only. `"singularized"`: Algorithm 1 (two private samples, noisy partner). `"instahide"`: '
            "the paper's comparator (section 3.1, equations 3-4): every row mixes `instahide-k-private` private "
            'samples and `instahide-k - instahide-k-private` rows of the public pool with Dirichlet weights and '
            'flips the sign of every value at random; labels from the private part only (renormalised onto the '
            'simplex). No calibrated noise: `tau`, `noise-mode` and `alpha` do not apply, and every private '
            'sample appears in `instahide-k-private` rows of each release'
        )
    )
    instahide_k: int = Field(4, ge=1, description="InstaHide: samples per encoded row (the paper's Table 4 comparator is k = 4)")
    instahide_k_private: int = Field(2, ge=1, description='InstaHide: how many of them are private (the rest come from the public pool)')
    public_fraction: float = Field(
        0.0, ge=0, lt=0.9, description=(
            'share of the training split held out, before partitioning, as the public pool (drawn from `seed`, so'
            ' all parties agree; no party holds it as private data). InstaHide with `instahide-k > '
            'instahide-k-private` needs it; set the same value for both encodings to compare them on the same '
            'partitions'
        )
    )

    # Model selection, the same rule for both protocols.
    selection: Literal["last", "validation", "mixed-validation"] = Field(
        "last", description=(
            'which model a run reports. `"last"`: the model after the fixed budget (central epochs / rounds with the '
            'cosine schedule), as the paper\'s recipe trains; no selection traffic (FedProx/FedAvg send no '
            'evaluate messages). `"validation"`: the lowest size-weighted loss on the parties\' clean held-out '
            'validation parts, for both protocols (one-shot: after training the server sends its candidate '
            'checkpoints to every party once, metered). `"mixed-validation"`: one-shot only, the lowest loss on the '
            'parties\' mixed validation releases (uploaded with the release). The test set never chooses'
        )
    )
    selection_every: int = Field(
        5, ge=1, description=(
            'one-shot with `selection = "validation"`: a candidate checkpoint every this many central epochs (the '
            'last epoch is always a candidate)'
        )
    )

    # Frozen backbone (appendix E); 'none' trains on raw inputs.
    backbone: Literal["none", "resnet18", "resnet50"] = Field(
        "none", description='frozen ImageNet feature extractor: `none` (raw inputs), `resnet18`, `resnet50`'
    )
    backbone_weights: str = Field(
        "IMAGENET1K_V1",
        description=(
            "torchvision weight enum name (`IMAGENET1K_V1`, `IMAGENET1K_V2`, `DEFAULT`; read from torch's hub "
            'cache, downloaded there if possible), an absolute path to a `state_dict` file, or `"none"` for '
            'random initialisation. No silent fallback; the summary records source, name and SHA-256'
        ),
    )
    feature_pool: Literal["flatten", "avg"] = Field(
        "flatten", description='`flatten` layer4 (512x7x7 = 25,088 for ResNet-18 at 224 px, as the paper) or `avg` (512 / 2,048)'
    )
    image_size: int = Field(224, ge=32, le=1024, description='side images are resized to before the backbone (appendix E: 224)')
    feature_cache_dir: str = Field(
        "~/mixup-fl-cache",
        description=(
            'absolute folder of extracted features, one file per (data set, split, backbone, weights, pooling, '
            'size, data fingerprint), shared by all parties'
        ),
        validate_default=True,
    )
    extract_batch_size: int = Field(256, ge=1, description='images per backbone forward pass')
    radius_sample: int = Field(
        256, ge=2, description='images per party used to measure the feature displacement `||f(x+e) - f(x)||`'
    )

    # Iterative federated learning.
    num_rounds: int = Field(50, ge=1, le=10_000, description='FedProx/FedAvg rounds, at most 10,000')
    local_epochs: int = Field(1, ge=1, le=1_000, description='local epochs per round, at most 1,000')
    aggregation: Literal["mean", "median", "trimmed-mean", "krum"] = Field(
        "mean", description=(
            'FedProx/FedAvg: how the server combines the parties\' models. `"mean"`: the size-weighted mean '
            '(FedAvg); `"median"`, `"trimmed-mean"` (`trim-fraction` cut at each end) and `"krum"` (Blanchard et '
            'al. 2017, `krum-malicious` assumed hostile parties) are Flower\'s robust aggregators; with a robust '
            'rule the FedProx proximal term stays on the parties'
        )
    )
    trim_fraction: float = Field(0.2, ge=0, lt=0.5, description='trimmed-mean: share of models cut at each end')
    krum_malicious: int = Field(0, ge=0, description='krum: number of parties assumed hostile')
    proximal_mu: float = Field(1e-3, ge=0, description="FedProx's mu")

    # Client-side defences of the iterative strategies (Fed-AugMix, DP-Mix).
    defence: str = Field(
        "none", description=(
            'FedProx/FedAvg only: the parties\' local update. `"fed-augmix"`: AugMix (Algorithm 2 of Fed-AugMix) '
            'on the raw images plus the Jensen-Shannon consistency loss; `"dp-mix-self"`: DP-SGD (Opacus) whose '
            'per-sample gradient averages self-augmentations and self-mixups of that sample only, with (epsilon, '
            'delta) reported per party; `"dp-mix-diff"`: also mixes with samples of a text-to-image diffusion '
            'model read from `diffusion-model-path` (local only, never downloaded). Raw inputs only (`backbone = '
            '"none"`). DP-Mix trains a LayerNorm classifier (Opacus cannot do per-sample gradients through '
            'BatchNorm)'
        )
    )
    augmix_severity: float = Field(3.0, ge=0.1, le=10, description="Fed-AugMix severity s in [0.1, 10]: each operation's level is U(0.1, s)/10 of its maximum (eq. 2)")
    augmix_width: int = Field(3, ge=1, description='Fed-AugMix: chains per image (n)')
    augmix_depth: int = Field(3, ge=1, description='Fed-AugMix: chain lengths drawn from 1..depth')
    augmix_alpha: float = Field(1.0, gt=0, description='Fed-AugMix: Dirichlet(alpha) chain weights, Beta(alpha, alpha) skip weight')
    js_weight: float = Field(50.0, ge=0, description='Fed-AugMix: lambda of the JS term (section V: 50)')
    js_large_weight: float = Field(
        5e3, ge=0, description=(
            'Fed-AugMix loss scaling (section IV-E): lambda becomes this while L_c > js-scale * D_JS (LargeVal = '
            '5e3)'
        )
    )
    js_scale: float = Field(5e4, gt=0, description='Fed-AugMix loss scaling: Scale (5e4)')
    loss_scaling: bool = Field(True, description='Fed-AugMix: the loss-scaling schedule on, or a constant `js-weight`')
    dp_noise_multiplier: float = Field(
        1.0, ge=0, description=(
            'DP-Mix: DP-SGD noise multiplier sigma; noise std sigma * C on the sum of clipped per-sample '
            'gradients'
        )
    )
    dp_max_grad_norm: float = Field(1.0, gt=0, description='DP-Mix: per-sample clip C')
    dp_delta: float = Field(1e-5, gt=0, lt=1, description='DP-Mix: delta of the reported (epsilon, delta), RDP accountant over all rounds')
    dpmix_augmentations: int = Field(4, ge=1, description='DP-Mix: self-augmentations K per sample (random translations, flips if `dpmix-flip`)')
    dpmix_mixups: int = Field(4, ge=0, description='DP-Mix: mixups M of pairs of those (DP-Mix_diff: of one with a diffusion sample)')
    dpmix_alpha: float = Field(1.0, gt=0, description='DP-Mix: mixup weight ~ Beta(alpha, alpha)')
    dpmix_max_shift: int = Field(1, ge=0, description='DP-Mix: largest translation of a self-augmentation, pixels')
    dpmix_flip: bool = Field(False, description='DP-Mix: random horizontal flips (wrong for digits)')
    diffusion_model_path: str = Field(
        "", description='DP-Mix_diff: absolute folder of a local diffusers text-to-image model; required by `dp-mix-diff`'
    )
    diffusion_samples_per_class: int = Field(8, ge=1, description='DP-Mix_diff: samples generated per class name')

    # Optimisation (appendix E).
    batch_size: int = Field(128, ge=2, description='mini-batch size (appendix E)')
    lr: float = Field(1e-3, gt=0, description='AdamW learning rate, cosine-annealed (per step on the server, per round for clients)')
    weight_decay: float = Field(1e-4, ge=0, description='AdamW weight decay')

    # Execution and outputs.
    device: Literal["auto", "cpu", "cuda"] = Field(
        "auto", description='where the server trains and the parties extract, mix and train: `auto`, `cpu`, `cuda`'
    )
    round_timeout: float = Field(
        600.0, gt=0, description=(
            "seconds to wait for the parties' replies; a FedProx/FedAvg party that has not answered by then is "
            "left out of that round (listed in the summary)"
        )
    )
    expected_parties: int = Field(
        0, ge=0, description=(
            'deployment: parties (SuperNodes) to wait for before starting; `0` = those connected when the run '
            'starts (simulation)'
        )
    )
    connect_timeout: float = Field(600.0, gt=0, description='seconds to wait for `expected-parties`; after it the run proceeds if at least `quorum` are connected')
    quorum: int = Field(
        2, ge=1, description=(
            'fewest connected parties, fewest valid one-shot releases, and fewest accepted FedProx/FedAvg '
            'replies per round, a run proceeds with (below it the run fails and writes '
            '`<run-name>.failed.json` with what it collected); parties that never answer, fail or whose reply is rejected are listed '
            'in the summary with the reason'
        )
    )
    max_upload_mb: float = Field(2048.0, gt=0, description='largest accepted one-shot upload of one party (all arrays of its reply), MiB')
    output_dir: str = Field(
        "~/mixup-fl-runs",
        description='absolute folder for run summaries (`~` allowed; the ServerApp does not run in the project folder)',
        validate_default=True,  # expand the default's ~ too
    )
    run_name: str = Field("", max_length=200,
                          description='file name of the summary; empty = strategy, data, parties, beta, seed and time')
    party_figures: Literal["coarse", "exact"] = Field(
        "coarse", description=(
            'what a party tells the server about its own release. `"coarse"`: the measured SNR and '
            're-identification rate rounded to two significant digits and Theorem 1\'s bound as a power of ten; '
            'the statistics of its private data (Theorem 2\'s V, D, c, the radius and noise multiplier derived '
            'from them) stay at the party. `"exact"`: every figure, for simulation studies that need them centrally'
        )
    )

    @field_validator("output_dir", "feature_cache_dir")
    @classmethod
    def _absolute_output_dir(cls, value: str) -> str:
        expanded = os.path.expanduser(value)
        if not os.path.isabs(expanded):
            raise ValueError(
                "must be an absolute path (the ServerApp does not run in the project folder)"
            )
        return expanded

    @field_validator("data_dir", "diffusion_model_path", "server_test_path")
    @classmethod
    def _absolute_data_dir(cls, value: str) -> str:
        expanded = os.path.expanduser(value)
        if value and not os.path.isabs(expanded):
            raise ValueError("must be an absolute path (the apps do not run in the project folder)")
        return expanded

    @field_validator("backbone_weights")
    @classmethod
    def _known_weights(cls, value: str) -> str:
        expanded = os.path.expanduser(value)
        if value in ("none", "IMAGENET1K_V1", "IMAGENET1K_V2", "DEFAULT") or os.path.isabs(expanded):
            return value if not os.path.isabs(expanded) else expanded
        raise ValueError(
            "must be a torchvision weight enum name (IMAGENET1K_V1, IMAGENET1K_V2, DEFAULT), "
            "an absolute path to a state_dict file, or 'none' for random initialisation"
        )

    @field_validator("encoding")
    @classmethod
    def _registered_encoding(cls, value: str) -> str:
        ENCODINGS.get(value)  # raises UnknownVariant (a ValueError) naming the known encodings
        return value

    @field_validator("defence")
    @classmethod
    def _registered_defence(cls, value: str) -> str:
        DEFENCES.get(value)
        return value

    @field_validator("partitioner")
    @classmethod
    def _registered_partitioner(cls, value: str) -> str:
        PARTITIONERS.get(value)
        return value

    @field_validator("run_name")
    @classmethod
    def _plain_run_name(cls, value: str) -> str:
        if any(ch in value for ch in "/\\") or value in {".", ".."}:
            raise ValueError("must be a plain file name without folders")
        return value

    @model_validator(mode="after")
    def _consistent(self) -> RunConfig:
        if self.expected_parties and self.quorum > self.expected_parties:
            raise ValueError(f"quorum: {self.quorum} is more than expected-parties = {self.expected_parties}")
        if self.release != "once" and self.strategy != "one-shot-mixup":
            raise ValueError("release: only used with strategy = 'one-shot-mixup'; leave it at 'once'")
        if self.encoding != DEFAULT_ENCODING and self.strategy != "one-shot-mixup":
            raise ValueError(f"encoding: only used with strategy = 'one-shot-mixup'; leave it at '{DEFAULT_ENCODING}'")
        if self.strategy == "local-only" and (self.defence != DEFAULT_DEFENCE or self.encoding != DEFAULT_ENCODING):
            raise ValueError("strategy: 'local-only' (each party alone, plain training) takes no encoding or defence")
        if self.selection == "mixed-validation" and self.strategy != "one-shot-mixup":
            raise ValueError("selection: 'mixed-validation' exists for one-shot runs only (FedProx/FedAvg have no "
                             "mixed releases); use 'last' or 'validation', the same rule as the runs compared")
        if self.aggregation != "mean" and self.strategy not in ("fedprox", "fedavg"):
            raise ValueError("aggregation: only used with strategy = 'fedprox' or 'fedavg'; leave it at 'mean'")
        if self.defence != DEFAULT_DEFENCE and self.strategy in ("one-shot-mixup", "local-only"):
            raise ValueError(f"defence: only used with strategy = 'fedprox' or 'fedavg'; leave it at '{DEFAULT_DEFENCE}'")
        # Each variant refuses the settings it cannot run with (its message starts with the key).
        self.partitioner_spec.check_config(self)
        if self.strategy == "one-shot-mixup":
            self.encoding_spec.check_config(self)
        else:
            self.defence_spec.check_config(self)
        if self.node_local:
            check_node_local(self)
        else:
            for key, value in (("server-test-path", self.server_test_path), ("classes", self.classes),
                               ("input-shape", self.input_shape)):
                if value:
                    raise ValueError(f"{key}: only used with data-source = 'node-local' (a partition of "
                                     f"{self.dataset} takes its classes, shape and test split from the data set)")
        if self.backbone_sha256:
            if len(self.backbone_sha256) != 64 or any(c not in "0123456789abcdef" for c in self.backbone_sha256):
                raise ValueError("backbone-sha256: 64 lower-case hex digits, as sha256sum prints them")
            if not self.uses_backbone or not os.path.isabs(self.backbone_weights):
                raise ValueError("backbone-sha256: only used with a backbone whose backbone-weights is a file path")
        if self.node_local:
            return self
        if self.dataset == "digits" and self.backbone != "none":
            raise ValueError("backbone: digits holds 8x8 feature rows, not images; use backbone = 'none'")
        if self.dataset != "digits" and not self.data_dir and not self.download:
            raise ValueError(
                f"data-dir: {self.dataset} is read from a local copy; set data-dir to its absolute "
                "folder, or download = true on a machine with internet"
            )
        return self

    @property
    def node_local(self) -> bool:
        """Every party reads its own data (``data-source = "node-local"``)."""
        return self.data_source == "node-local"

    @property
    def class_names(self) -> tuple[str, ...]:
        """``classes`` as a tuple (empty: labels are indices)."""
        return tuple(n.strip() for n in self.classes.split(",")) if self.classes.strip() else ()

    @property
    def contract_num_classes(self) -> int:
        return self.num_classes or len(self.class_names)

    @property
    def sample_shape(self) -> tuple[int, ...]:
        """``input-shape`` as a tuple of positive ints (``3x32x32`` or ``3,32,32``)."""
        return parse_shape(self.input_shape)

    @property
    def image_stats(self) -> tuple[tuple[float, ...], tuple[float, ...]]:
        """``(image-mean, image-std)`` as tuples of floats."""
        return floats("image-mean", self.image_mean), floats("image-std", self.image_std)

    @property
    def value_range(self) -> tuple[float, float]:
        """``vector-range`` as ``(lo, hi)``."""
        values = floats("vector-range", self.vector_range)
        if len(values) != 2:
            raise ValueError(f"vector-range: two numbers lo,hi; got {self.vector_range!r}")
        return values[0], values[1]

    @property
    def data_contract(self):  # noqa: ANN201 - loaders.local.DataContract (imported on use)
        """What every party's own data must look like (:class:`loaders.local.DataContract`)."""
        from loaders.local import DataContract

        return DataContract(classes=self.class_names, num_classes=self.contract_num_classes, kind=self.input_kind,
                            shape=self.sample_shape, unknown_classes=self.unknown_classes)

    @property
    def clamp_partner(self) -> bool:
        return self.noise_mode == "clamped"

    @property
    def uses_backbone(self) -> bool:
        return self.backbone != "none"

    @property
    def encoding_spec(self) -> Encoding:
        """The one-shot encoding this run uses (:mod:`common.encodings`)."""
        return get_encoding(self.encoding)

    @property
    def defence_spec(self) -> Defence:
        """The iterative strategies' client-side defence (:mod:`common.defences`)."""
        return get_defence(self.defence)

    @property
    def partitioner_spec(self) -> Partitioner:
        """How the data set is split among the parties (:mod:`common.partition`)."""
        return get_partitioner(self.partitioner)

    @property
    def model_norm(self) -> Literal["batch", "layer"]:
        """The classifier's normalisation, as the defence needs it (DP-SGD: LayerNorm)."""
        return self.defence_spec.model_norm


def _describe(error: Mapping[str, Any]) -> str:
    loc = error.get("loc") or ()
    key = str(loc[0]) if loc else ""
    msg = str(error.get("msg", "invalid"))
    if error.get("type") == "extra_forbidden":
        known = ", ".join(sorted(RunConfig.model_fields[f].alias or f for f in RunConfig.model_fields))
        return f"run config key '{key}': unknown key (known keys: {known})"
    if not key:  # model-level check: its message starts with the key
        text = msg.removeprefix("Value error, ")
        key, _, rest = text.partition(":")
        return f"run config key '{key.strip()}':{rest}"
    value = error.get("input")
    return f"run config key '{key}' = {value!r}: {msg.removeprefix('Value error, ')}"


def parse_run_config(values: Mapping[str, Any]) -> RunConfig:
    """Validate Flower's run config (``context.run_config``) into a :class:`RunConfig`.

    Raises
    ------
    ConfigError
        One line per problem, each naming the offending key.
    """
    try:
        return RunConfig.model_validate(dict(values))
    except ValidationError as err:
        raise ConfigError("\n".join(_describe(e) for e in err.errors())) from None
