"""Settings: where the data lives, which database, which detector, which thresholds.

Resolution order, first hit wins: explicit keyword arguments, environment variables
(``PROFILE_AUDIT_*``), a TOML file (``$PROFILE_AUDIT_CONFIG``, else ``$PROFILE_AUDIT_HOME/config.toml``),
then defaults. With no database URL the embedded PostgreSQL under ``$PROFILE_AUDIT_HOME/pg`` is used.
"""

from __future__ import annotations

import math
import os
import re
import tomllib
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any, ClassVar

from pipeline.errors import UserError

ENV_PREFIX = "PROFILE_AUDIT_"


class _Validated:
    """Typed, frozen parameter tables, checked at construction with one-line errors.

    An ``int`` field takes an int (not a bool, not 2.9, not "2"); a ``float`` field takes an int or a
    finite float; every value is at least 0 unless ``LIMITS`` says otherwise; ``from_mapping``
    refuses unknown keys. No coercion: a TOML typo or a wrong DAG Param is an error, not a guess."""

    SECTION: ClassVar[str] = "policy"
    LIMITS: ClassVar[dict[str, tuple[float | None, float | None]]] = {}

    def __post_init__(self) -> None:
        for f in fields(self):  # type: ignore[arg-type]
            value = getattr(self, f.name)
            where = f"{self.SECTION} parameter {f.name}"
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                kind = "an integer" if f.type in ("int", int) else "a number"
                raise UserError(f"{where} must be {kind}, got {value!r}")
            if f.type in ("int", int):
                if not isinstance(value, int):
                    raise UserError(f"{where} must be an integer, got {value!r}")
            else:
                if not math.isfinite(value):
                    raise UserError(f"{where} must be a finite number, got {value!r}")
                object.__setattr__(self, f.name, float(value))
            low, high = self.LIMITS.get(f.name, (0, None))
            if low is not None and value < low:
                raise UserError(f"{where} must be at least {low}, got {value!r}")
            if high is not None and value > high:
                raise UserError(f"{where} must be at most {high}, got {value!r}")

    @classmethod
    def from_mapping(cls, values: dict[str, Any] | None):  # -> Self
        if values is not None and not isinstance(values, dict):
            raise UserError(f"[{cls.SECTION}] must be a table of settings, got {values!r}")
        values = dict(values or {})
        known = [f.name for f in fields(cls)]  # type: ignore[arg-type]
        unknown = sorted(set(values) - set(known))
        if unknown:
            raise UserError(f"unknown {cls.SECTION} parameter(s) {unknown}; known: {sorted(known)}")
        return cls(**values)

    def as_dict(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in fields(self)}  # type: ignore[arg-type]


@dataclass(frozen=True)
class NetworkParams(_Validated):
    """Thresholds of the network stage: traits and bursts, co-activity edges, clusters and their ids. Part
    ``network`` of the policy; the image and flag thresholds are ``ImageParams`` and ``FlagParams`` (all three
    set in the TOML ``[network]`` table, see ``THRESHOLD_PARTS``). Validated at construction: see ``_Validated``."""

    SECTION: ClassVar[str] = "network"
    LIMITS: ClassVar[dict[str, tuple[float | None, float | None]]] = {
        "min_cluster_size": (2, None), "identical_text_max_group": (2, None), "leiden_min_size": (2, None),
        "co_min_weight": (1, None), "co_hashtag_min_tags": (1, None), "burst_p_value": (0, 1),
        "cluster_match_jaccard": (0, 1), "burst_max_chance_share": (0, 1),
        "stem_min_chars": (1, None), "stem_min_digits": (1, None), "stem_min_chars_plain": (1, None),
        "stem_max_accounts": (2, None)}

    creation_window_hours: float = 48.0
    min_template_digits: int = 6
    min_cluster_size: int = 3
    identical_text_max_group: int = 50  # identical_bio / identical_link: larger groups are boilerplate
    strong_edge_min_weight: float = 0.5  # a pair joins a component when its summed edge weights reach this
    leiden_min_size: int = 200  # components at least this large are split by Leiden
    leiden_resolution: float = 1.0  # Leiden (RBConfiguration) resolution: higher, smaller communities
    cluster_match_jaccard: float = 0.5  # a cluster keeps a previous run's id at this member overlap
    burst_factor: float = 2.0  # creation_window: a trait's accounts in one window vs its average rate
    burst_p_value: float = 0.01  # creation_window: Poisson tail of a window's count, Bonferroni over the accounts tested for that kind of trait
    # creation_window against the population (pipeline/networks/bursts.py; docs/networks.md "Edges"): a trait's
    # expected count in a window is its share of all accounts times the population's count around the window,
    # at least the count over burst_smoothing_days scaled to the window (so a quiet stretch expects no less)
    burst_smoothing_days: float = 7.0
    count_profile_bin: float = 0.1  # count_profile trait: width of the log10(1 + n) bins of followers/following/posts
    count_profile_min_count: int = 5  # count_profile trait: accounts of one profile in the window, at least
    # a burst makes edges only where expected / observed in its window is at most this: the share of the window's
    # accounts that the population explains by chance (a ceiling on the accounts chained in by chance)
    burst_max_chance_share: float = 0.1
    burst_refine_bin: float = 1.0  # width (decades) of the coarse count bins that narrow a template or synthetic label
    # co_repost / co_link / co_post edges (pipeline/networks/coactivity.py), as QUT's coordination-network-toolkit:
    # two posts co-occur when |t1 - t2| <= co_window_seconds (QUT's README works with 1 minute), and an
    # edge needs co_min_weight co-occurring posts (QUT's CLI default --min_edge_weight 2).
    co_window_seconds: float = 60.0
    co_min_weight: int = 2
    co_evidence_examples: int = 5  # example post pairs kept in each edge's evidence (plus the total count)
    co_hashtag_min_tags: int = 2  # co_hashtag: a post's hashtag set needs this many distinct tags (one tag is a topic)
    # same_handle_stem (pipeline/networks/crossplatform.py): a handle stem joins accounts on different platforms
    # when it has stem_min_chars characters with stem_min_digits trailing digits, or stem_min_chars_plain without,
    # and at most stem_max_accounts accounts hold it, never two on one platform (common names stay out)
    stem_min_chars: int = 10
    stem_min_digits: int = 2
    stem_min_chars_plain: int = 14
    stem_max_accounts: int = 4


@dataclass(frozen=True)
class ImageParams(_Validated):
    """Thresholds of the image edges (pipeline/signals/neardup.py, pipeline/networks/edges.py; docs/networks.md
    "Edges"): identical, near-duplicate, confirmed near-duplicate (image ring) and similar-embedding avatars.
    Part ``image`` of the policy, set in the TOML ``[network]`` table."""

    SECTION: ClassVar[str] = "network"
    LIMITS: ClassVar[dict[str, tuple[float | None, float | None]]] = {
        "identical_avatar_max_group": (2, None), "clip_max_neighbours": (1, None), "near_dup_max_distance": (0, 64),
        "clip_min_cosine": (-1, 1),
        "near_dup_confirm_min_inliers": (3, None), "near_dup_confirm_inlier_share": (0, 1),
        "near_dup_confirm_detail_corr": (-1, 1), "min_image_detail": (0, 1)}

    identical_avatar_max_group: int = 1000
    near_dup_max_distance: int = 6  # near_duplicate_avatar: pHash Hamming distance, of 64 bits
    clip_min_cosine: float = 0.95  # similar_embedding: cosine between two likely-synthetic avatars
    clip_max_neighbours: int = 10  # similar_embedding: nearest neighbours kept per avatar
    # confirmed_near_duplicate (an image ring): a pHash near-duplicate pair of two detailed images
    # (pipeline/images/measures.py) that a local-feature match shows to be the same picture
    # (pipeline/images/matching.py): ORB keypoints one similarity transform explains, and the band-pass
    # detail of the two correlating once aligned. dHash and embeddings no longer confirm: on aligned portraits
    # they agree for different people. Measured per source by bench/image_rings.py (docs/networks.md "Image rings")
    near_dup_confirm_min_inliers: int = 20  # keypoint matches one similarity transform explains, at least
    near_dup_confirm_inlier_share: float = 0.2  # ... and this share of the keypoints of the image with fewer
    near_dup_confirm_detail_corr: float = 0.5  # correlation of the aligned images' fine detail, at least
    min_image_detail: float = 0.3  # share of texture pixels at 32 x 32; flat logos, cartoons and default avatars are below


@dataclass(frozen=True)
class FlagParams(_Validated):
    """Thresholds of the flag stage (pipeline/flags/rules.py; docs/networks.md "Clusters and flags"): the
    score a flag needs, each rule's share, which co-activity edges count, and when an investigator's status
    carries over. Part ``flag`` of the policy, set in the TOML ``[network]`` table."""

    SECTION: ClassVar[str] = "network"
    LIMITS: ClassVar[dict[str, tuple[float | None, float | None]]] = {
        "coactivity_min_weight": (1, None), "coactivity_min_idf_weight": (0, None), **{n: (0, 1) for n in (
            "flag_score_threshold", "synthetic_share_rule", "burst_share_rule", "template_share_rule",
            "coactivity_share_rule", "status_keep_jaccard", "batch_share_rule", "image_ring_share_rule",
            "pair_max_chance_share", "coactivity_max_chance_share")}}

    flag_score_threshold: float = 0.5
    synthetic_share_rule: float = 0.5  # rule synthetic_faces: share of members with a synthetic avatar
    burst_share_rule: float = 0.5  # rule batch_created: largest one-day share of creation dates
    template_share_rule: float = 0.5  # rule templated_handles: share of members with one handle template
    batch_share_rule: float = 0.5  # rule batch_created: ... or share of members on creation_window edges (bursts vs the population)
    image_ring_share_rule: float = 0.5  # rule image_ring: share of members on confirmed_near_duplicate edges
    coactivity_share_rule: float = 0.5  # rule coordinated_activity: share of members with a qualifying co_* edge
    # ... of at least this weight: 2, what CooRTweet's weight filter keeps on its own data (docs/networks.md)
    coactivity_min_weight: int = 2
    # ... and whose IDF weight (evidence idf_weight_*: each co-occurring post counted by its object's rarity,
    # pipeline/networks/coactivity.py) reaches this: chance co-reposts of viral posts fall below it
    coactivity_min_idf_weight: float = 0.4
    # ... and that chance does not explain: among the run's co-activity edges of its type that pass the two gates
    # above, the share expected by chance at least as unlikely (evidence chance.run_chance_share, Benjamini-Hochberg
    # over the edges; pipeline/networks/build.py) is at most this. At ten million accounts' reposts a minute the
    # organic chance edges that pass the gates all score 1.0; CooRTweet's real coordinated edges score at most
    # 0.23, planted rings and pairs 0 (docs/networks.md, "Chance co-activity at scale"); 1 turns it off
    coactivity_max_chance_share: float = 0.5
    # rule coordinated_pair: two accounts joined by nothing but a qualifying co-activity edge are reported as a
    # `pair` flag when the chance estimate explains at most this share of the run's two-account pairs at least
    # as unlikely (evidence chance.chance_share; pipeline/networks/coactivity.py and clusters.py); 0: no pairs.
    # The estimate overstates chance: CooRTweet's 24 pairs score 0.05-0.5 and organic chance pairs of the planted
    # populations 1.0 (docs/networks.md, "Coordinated pairs"); 0.3 keeps 22 of the 24
    pair_max_chance_share: float = 0.3
    status_keep_jaccard: float = 0.8  # an investigator's status carries over at this overlap, else re-opened


# The thresholds' parts: the TOML [network] table, the DAG Params and run rows recorded before
# POLICY_VERSION 6 (runs.params.network) name every threshold flat; each name belongs to one part.
THRESHOLD_CLASSES: dict[str, type[_Validated]] = {"network": NetworkParams, "image": ImageParams, "flag": FlagParams}
THRESHOLD_PARTS: dict[str, str] = {f.name: part for part, kind in THRESHOLD_CLASSES.items() for f in fields(kind)}


def split_thresholds(values: dict[str, Any] | None, *, strict: bool = True) -> dict[str, dict[str, Any]]:
    """A flat table of thresholds (``[network]``, DAG Params, a pre-split run row) as one table per part.
    ``strict``: an unknown name is an error; else it is dropped (a retired parameter of an old run row)."""
    if values is not None and not isinstance(values, dict):
        raise UserError(f"[network] must be a table of settings, got {values!r}")
    values = values or {}
    unknown = sorted(set(values) - set(THRESHOLD_PARTS))
    if unknown and strict:
        raise UserError(f"unknown network parameter(s) {unknown}; known: {sorted(THRESHOLD_PARTS)}")
    parts: dict[str, dict[str, Any]] = {part: {} for part in THRESHOLD_CLASSES}
    for name, value in values.items():
        if name in THRESHOLD_PARTS:
            parts[THRESHOLD_PARTS[name]][name] = value
    return parts


@dataclass(frozen=True)
class RiskWeights(_Validated):
    """Account risk (``account_signals.risk``): the weight of each signal, summed and capped at 1, and the
    two cut-offs the signals use. ``compute_account_signals`` (sql/functions/20_account_signals.sql) takes
    them as an argument (``Policy.signal_arguments``) from the run's recorded policy; it has no copy of them. Table in docs/networks.md, "Signals and risk"."""

    SECTION: ClassVar[str] = "risk_weights"
    LIMITS: ClassVar[dict[str, tuple[float | None, float | None]]] = {
        "synthetic_avatar": (0, 1), "past_synthetic_avatar": (0, 1), "gan_eye_alignment": (0, 1),
        "avatar_reuse": (0, 1), "near_duplicate_avatar": (0, 1), "template_handle": (0, 1), "new_account": (0, 1),
        "empty_bio": (0, 1), "default_bio": (0, 1), "few_followers": (0, 1)}

    synthetic_avatar: float = 0.45  # times the avatar's generated probability
    past_synthetic_avatar: float = 0.10  # times how much higher an earlier avatar scored
    gan_eye_alignment: float = 0.15  # the eyes sit where a GAN puts them (face_signals)
    avatar_reuse: float = 0.20  # another account of the run shows the same image
    near_duplicate_avatar: float = 0.15  # ... a near-duplicate of it (and no identical one)
    template_handle: float = 0.15  # a trailing digit run of at least network.min_template_digits
    new_account: float = 0.10  # created less than new_account_days before the run's as-of time
    empty_bio: float = 0.05
    default_bio: float = 0.05  # a stock phrase, punctuation only, or the account's own name
    few_followers: float = 0.05  # fewer than few_followers_below followers
    new_account_days: int = 90
    few_followers_below: int = 10


@dataclass(frozen=True)
class ClusterWeights(_Validated):
    """Cluster score = min(1, sum of weight x feature share); pipeline/flags/rules.py. Table and how
    the numbers were chosen: docs/networks.md, "Clusters and flags"."""

    SECTION: ClassVar[str] = "cluster_weights"

    synthetic_share: float = 0.35
    burst_share: float = 0.25
    template_share: float = 0.25
    coactivity_share: float = 0.6
    shared_image_share: float = 0.1
    mean_risk: float = 0.2
    batch_share: float = 0.45  # members on creation_window edges: bursts tested against the population
    image_ring_share: float = 0.45  # members on confirmed_near_duplicate edges: an image ring


@dataclass(frozen=True)
class EdgeWeights(_Validated):
    """The weight each edge builder gives its edges (pipeline/networks/edges.py), on the one scale that
    ``network.strong_edge_min_weight`` (0.5) cuts: at least 0.5 is strong alone, 0.25 to 0.35 only
    corroborates. Table: docs/networks.md, "Edges". Co-activity edges (``co_*``) weigh their count of
    co-occurring posts instead (``network.co_min_weight``)."""

    SECTION: ClassVar[str] = "edge_weights"

    identical_avatar: float = 1.0  # the same image sha256
    confirmed_near_duplicate: float = 0.8  # a near-duplicate pair confirmed by a second measure (an image ring)
    creation_trait: float = 0.5  # creation_window: per trait shared inside a burst
    narrowed_trait: float = 0.25  # creation_window: per narrowed trait (a template + a count bin or an empty bio)
    identical_text: float = 0.3  # identical_bio, identical_link
    # near_duplicate_avatar, similar_embedding: corroborating_base + corroborating_span x closeness in [0, 1]
    corroborating_base: float = 0.25
    corroborating_span: float = 0.1
    handle_stem: float = 0.5  # same_handle_stem: one distinctive handle stem on two platforms (strong alone)


POLICY_VERSION = 8  # 1: the foundation's weights; 2: co-activity calibrated on CooRTweet's data (docs/networks.md);
# 3: batch_share and image_ring_share (population-tested bursts, confirmed image rings), coactivity_min_idf_weight;
# 4: a burst makes edges only where chance explains at most burst_max_chance_share of it; narrowed traits;
# 5: the edge weights are part of the policy (edge_weights; the same numbers as version 4's constants);
# 6: the image and flag thresholds are parts of their own (image, flag; the same numbers, before in network)
# 7: pair_max_chance_share: two accounts on a co-activity edge that chance does not explain are a `pair` flag;
#    and cross-platform handle stems (network.stem_*, edge_weights.handle_stem; issue 23, item 4);
#    and image rings are confirmed by a local-feature match of the pixels (near_dup_confirm_min_inliers,
#    near_dup_confirm_inlier_share, near_dup_confirm_detail_corr), no longer by dHash or embedding cosine (near_dup_confirm_dhash/_cosine retired)
# 8: coactivity_max_chance_share: a co-activity edge counts for C (and for pairs) only when chance explains at most
#    this share of the run's edges as unlikely; a run recorded before version 8 keeps version 7's rule (1: off)


@dataclass(frozen=True)
class Policy:
    """The whole scoring policy of a run: network, image and flag thresholds, account risk weights, cluster
    weights, edge weights, and the version of the built-in defaults. Recorded on the run at begin
    (``runs.params``: ``network``, ``image``, ``flag``, ``risk_weights``, ``cluster_weights``,
    ``edge_weights``, ``policy_version``) and loaded back from there (``from_run_params``) by the stages,
    which hand the values on: to the SQL signals as arguments, to the flag rules and the builders as these
    typed parts. Each value is defined once, here, so a run is scored by what it records."""

    network: NetworkParams = field(default_factory=NetworkParams)
    risk: RiskWeights = field(default_factory=RiskWeights)
    cluster: ClusterWeights = field(default_factory=ClusterWeights)
    version: int = POLICY_VERSION
    edge: EdgeWeights = field(default_factory=EdgeWeights)  # from here on: positional callers keep their meaning
    image: ImageParams = field(default_factory=ImageParams)
    flag: FlagParams = field(default_factory=FlagParams)

    def run_params(self) -> dict[str, Any]:
        return {**self.threshold_params(), "risk_weights": self.risk.as_dict(),
                "cluster_weights": self.cluster.as_dict(), "edge_weights": self.edge.as_dict(),
                "policy_version": self.version}

    def threshold_params(self) -> dict[str, Any]:
        """The threshold parts as ``runs.params`` records them (``network``, ``image``, ``flag``)."""
        return {part: getattr(self, part).as_dict() for part in THRESHOLD_CLASSES}

    def thresholds(self) -> dict[str, Any]:
        """Every threshold under its flat name, as the ``[network]`` table and the DAG Params name them."""
        return {name: value for part in self.threshold_params().values() for name, value in part.items()}

    def with_thresholds(self, values: dict[str, Any]) -> Policy:
        """This policy with some thresholds replaced, given by flat name (unknown names are an error)."""
        parts = split_thresholds(values)
        return replace(self, **{part: kind.from_mapping({**getattr(self, part).as_dict(), **parts[part]})
                                for part, kind in THRESHOLD_CLASSES.items() if parts[part]})

    @classmethod
    def from_run_params(cls, params: dict[str, Any] | None) -> Policy:
        """The policy recorded on a run; parts a run does not record (runs opened before they existed) are
        the built-in defaults, and keys that are no longer parameters are ignored. A run recorded before
        version 6 holds every threshold in ``network``: each goes to its part."""
        params = params or {}
        legacy = split_thresholds(params.get("network"), strict=False)

        def part(kind, key, base=None):
            known = {f.name for f in fields(kind)}
            return kind.from_mapping({k: v for k, v in {**(base or {}), **(params.get(key) or {})}.items()
                                      if k in known})

        version = int(params.get("policy_version") or POLICY_VERSION)
        # a threshold a run's version did not have is set to what that version did
        before = {"coactivity_max_chance_share": 1.0} if version < 8 else {}
        return cls(part(NetworkParams, "network"), part(RiskWeights, "risk_weights"),
                   part(ClusterWeights, "cluster_weights"), version,
                   part(EdgeWeights, "edge_weights"), part(ImageParams, "image", legacy["image"]),
                   part(FlagParams, "flag", {**before, **legacy["flag"]}))

    def signal_arguments(self) -> dict[str, Any]:
        """The values ``compute_account_signals`` (sql/functions/20_account_signals.sql) takes as its
        ``p_policy`` argument, shaped as ``runs.params`` records them: the risk weights and cut-offs, and
        ``network.min_template_digits``."""
        return {"risk_weights": self.risk.as_dict(),
                "network": {"min_template_digits": self.network.min_template_digits}}


def complete_run_params(params: dict[str, Any] | None) -> dict[str, Any]:
    """A run's params with every policy part filled in (what ``runs.start_run`` records)."""
    params = dict(params or {})
    return {**params, **Policy.from_run_params(params).run_params()}


@dataclass(frozen=True)
class FetchParams:
    """Limits of avatar URL fetching (TOML table ``[fetch]``). There is deliberately no setting that
    allows private or loopback destinations: see pipeline/images/fetch.py."""

    concurrency: int = 16  # requests in flight
    per_host_rate: float = 10.0  # request starts per second to one host (0 = unlimited)
    connect_timeout: float = 5.0
    read_timeout: float = 10.0
    total_timeout: float = 60.0  # per URL, retries and redirects included
    max_bytes: int = 10 * 1024 * 1024
    max_redirects: int = 3
    retries: int = 3  # on 429, 5xx and connection errors
    backoff: float = 0.5  # seconds, doubled per retry
    max_retry_after: float = 30.0  # a longer Retry-After gives up instead of waiting

    @classmethod
    def from_mapping(cls, values: dict[str, Any] | None) -> FetchParams:
        values = dict(values or {})
        known = {f.name for f in fields(cls)}
        unknown = set(values) - known
        if unknown:
            raise UserError(f"unknown fetch setting(s) {sorted(unknown)} in [fetch]; known: {sorted(known)}")
        default = cls()
        try:
            params = cls(**{k: type(getattr(default, k))(v) for k, v in values.items()})
        except (TypeError, ValueError) as exc:
            raise UserError(f"bad value in the [fetch] settings: {exc}") from None
        if params.concurrency < 1 or params.max_bytes < 1 or params.retries < 0 or params.max_redirects < 0:
            raise UserError("[fetch] concurrency and max_bytes must be at least 1, retries and max_redirects at least 0")
        return params


@dataclass(frozen=True)
class Settings:
    home: Path
    database_url: str | None = None
    landing_dir: Path = Path("/opt/profile-audit/landing")  # the nightly DAG reads <landing_dir>/<YYYY-MM-DD>/
    detector: str | None = None  # detector id or path to a saved detector JSON; None = the promoted default
    # with none promoted, score with the face detector that ships in detectors/presets (off: skip scoring)
    shipped_detector: bool = True
    batch_size: int = 64
    torch_threads: int | None = None
    score_workers: int = 2  # decode/preprocess threads that feed inference (0 = no overlap)
    device: str | None = None  # 'cuda', 'cpu', ...; None = CUDA with fp16 when available, else the CPU
    face_signals: bool = True  # the score stage also runs the face detector (face_signals table)
    # decode/preprocess/face workers: 'auto' = processes when the face detector runs (dlib holds the GIL),
    # else threads; or 'threads' / 'processes' (measured in docs/benchmarks.md)
    score_decode: str = "auto"
    score_draft: bool = True  # JPEGs >= 2x the model input decode at reduced scale (Pillow draft)
    gpu_decode: bool = True  # on CUDA, the probe's JPEGs are decoded and preprocessed on the GPU
    connect_timeout: float = 10.0  # seconds to reach PostgreSQL (a listener that never answers fails, not hangs)
    lock_timeout: float = 60.0  # seconds a statement waits for a lock another session holds, then fails
    network: NetworkParams = field(default_factory=NetworkParams)  # TOML table [network], with image and flag
    image: ImageParams = field(default_factory=ImageParams)
    flag: FlagParams = field(default_factory=FlagParams)
    fetch: FetchParams = field(default_factory=FetchParams)
    risk_weights: RiskWeights = field(default_factory=RiskWeights)  # TOML table [risk_weights]
    cluster_weights: ClusterWeights = field(default_factory=ClusterWeights)  # TOML table [cluster_weights]

    def policy(self, network: NetworkParams | None = None) -> Policy:
        """The scoring policy of a run: these settings' thresholds and weights, with ``network`` if given."""
        return Policy(network or self.network, self.risk_weights, self.cluster_weights, image=self.image,
                      flag=self.flag)

    @property
    def image_dir(self) -> Path:
        return self.home / "images"

    @property
    def detector_dir(self) -> Path:
        return self.home / "detectors"

    @property
    def pg_dir(self) -> Path:
        return self.home / "pg"


def _read_toml(path: Path) -> dict[str, Any]:
    try:
        with path.open("rb") as fh:
            return tomllib.load(fh)
    except tomllib.TOMLDecodeError as exc:
        raise UserError(f"config file {path} is not valid TOML: {exc}") from None


def _config_section(env: dict[str, str], home: Path) -> dict[str, Any]:
    """The settings table of PROFILE_AUDIT_CONFIG, else of HOME/config.toml, else empty; sub-tables checked."""
    config_path = env.get(ENV_PREFIX + "CONFIG")
    file_values: dict[str, Any] = {}
    if config_path:
        if not Path(config_path).is_file():
            raise UserError(f"{ENV_PREFIX}CONFIG points at {config_path}, which is not a file")
        file_values = _read_toml(Path(config_path))
    elif (home / "config.toml").is_file():
        file_values = _read_toml(home / "config.toml")
    section = file_values.get("profile_audit", file_values)
    for name in ("network", "fetch"):
        if not isinstance(section.get(name, {}), dict):
            raise UserError(f"[{name}] in the config file must be a table of settings, got {section[name]!r}")
    return section


def load_settings(env: dict[str, str] | None = None, **overrides: Any) -> Settings:
    """Build Settings from keyword overrides, the environment and the optional TOML file."""
    env = dict(os.environ if env is None else env)
    home = Path(overrides.pop("home", None) or env.get(ENV_PREFIX + "HOME") or Path.home() / ".profile-audit")
    section = _config_section(env, home)

    def pick(name: str, default: Any = None) -> Any:
        if overrides.get(name) is not None:
            return overrides[name]
        if env.get(ENV_PREFIX + name.upper()):
            return env[ENV_PREFIX + name.upper()]
        return section.get(name, default)

    def number(name: str, default: Any, minimum: float, kind: type = int) -> Any:
        """A numeric setting, checked now (before any stage runs) with where it came from."""
        value = pick(name, default)
        if value is None:
            return None
        where = (f"{ENV_PREFIX}{name.upper()}" if overrides.get(name) is None and env.get(ENV_PREFIX + name.upper())
                 else name)
        try:
            if isinstance(value, bool) or (kind is int and isinstance(value, float)):
                raise ValueError
            parsed = kind(str(value).strip()) if isinstance(value, str) else kind(value)
        except (TypeError, ValueError):
            raise UserError(f"{where} must be a {'whole ' if kind is int else ''}number, got {value!r}") from None
        if parsed < minimum or (kind is float and math.isnan(parsed)):
            raise UserError(f"{where} must be at least {minimum:g}, got {value!r}")
        return parsed

    url = pick("database_url")
    if url:
        validate_database_url(url)
    landing = pick("landing_dir", "/opt/profile-audit/landing")
    threads = pick("torch_threads")
    try:
        thresholds = {part: kind.from_mapping(values)
                      for (part, kind), values in zip(THRESHOLD_CLASSES.items(),
                                                      split_thresholds(section.get("network")).values())}
    except (TypeError, ValueError) as exc:
        raise UserError(f"bad value in the [network] settings: {exc}") from None
    return Settings(
        home=home.expanduser().resolve(),
        database_url=url,
        landing_dir=Path(landing).expanduser(),
        detector=pick("detector"),
        batch_size=number("batch_size", 64, 1),
        torch_threads=number("torch_threads", None, 1) if threads else None,
        score_workers=number("score_workers", 2, 0),
        device=pick("device") or None,
        shipped_detector=str(pick("shipped_detector", True)).strip().lower() not in ("0", "false", "no", "off"),
        face_signals=str(pick("face_signals", True)).strip().lower() not in ("0", "false", "no", "off"),
        score_decode=_choice(str(pick("score_decode", "auto")), ("auto", "threads", "processes"), "score_decode"),
        score_draft=str(pick("score_draft", True)).strip().lower() not in ("0", "false", "no", "off"),
        gpu_decode=str(pick("gpu_decode", True)).strip().lower() not in ("0", "false", "no", "off"),
        connect_timeout=number("connect_timeout", 10.0, 1, float),
        lock_timeout=number("lock_timeout", 60.0, 0.001, float),
        network=thresholds["network"],
        image=thresholds["image"],
        flag=thresholds["flag"],
        fetch=FetchParams.from_mapping(section.get("fetch")),
        risk_weights=RiskWeights.from_mapping(section.get("risk_weights")),
        cluster_weights=ClusterWeights.from_mapping(section.get("cluster_weights")),
    )


def _choice(value: str, allowed: tuple[str, ...], name: str) -> str:
    value = value.strip().lower()
    if value not in allowed:
        raise UserError(f"{name} must be one of {', '.join(allowed)}, got {value!r}")
    return value


def validate_database_url(url: str) -> str:
    """Refuse URLs that would silently pick the wrong driver or are not Postgres at all."""
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    try:
        parsed = make_url(url)
        _ = parsed.port  # make_url parses the port lazily in some versions
    except (ArgumentError, ValueError):  # ValueError: a port that is not a number ("[::1:5432" lacks its "]")
        shown = re.sub(r"(//[^:/@]*:)[^@]*@", r"\1***@", url)  # never echo a password
        raise UserError(
            f"database URL {shown!r} is not a URL; expected postgresql+psycopg2://USER:PASSWORD@HOST:PORT/DB"
        ) from None
    if parsed.drivername != "postgresql+psycopg2":
        raise UserError(
            f"database URL uses driver {parsed.drivername!r}; use postgresql+psycopg2://USER:PASSWORD@HOST:PORT/DB"
        )
    return url
