"""GPN-MSA data: genome-MSA windows (the real loading path) and a synthetic MSA generator.

Real data follow the conventions of the ``gpn`` project (GPN-MSA, Benegas et al. 2025):

* the **genome MSA** is a Zarr group with one array per chromosome (e.g. ``"1"``, ``"2"``) of
  shape ``(chrom_length, 1 + n_species)`` and dtype ``uint8`` holding ASCII letters; column 0 is
  the human reference (lowercase = soft-masked repeat), the other columns the aligned bases of
  the other species (``-`` = gap / not aligned). ``songlab/multiz100way`` ships it as ``89.zarr``
  (human + 89 species).
* the **training windows** are a Hugging Face dataset (``songlab/gpn-msa-sapiens-dataset``) with
  ``train``/``validation``/``test`` splits and columns ``chrom``, ``start``, ``end``, ``strand``
  (0-based half-open intervals of 128 bp), optionally ``lowercase`` (soft-masked flags) and the
  per-position conservation tracks ``phastCons`` and ``phyloP`` used by GPN-MSA's loss weights.
* **variants** are tables of ``chrom``, ``pos`` (1-based, VCF style), ``ref``, ``alt`` and here
  also ``label`` (1 = pathogenic) and ``class`` (consequence).

``gpn.data.GenomeMSA`` reads the same store but imports biopython, bioframe and pyBigWig at module
load; :class:`GenomeMSA` below is a dependency-light reader of the same layout (zarr only).

The synthetic generator (:func:`simulate_genome_msa`) is documented in ``README.md``.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import torch

#: GPN-MSA vocabulary: ``-`` gap/unknown/pad, the four bases, ``?`` the mask token
VOCAB = "-ACGT?"
GAP_ID, MASK_ID = 0, 5
NUCLEOTIDE_IDS = (1, 2, 3, 4)
#: one-hot width of each auxiliary species column (``-ACGT``, never ``?``)
AUX_VOCAB_SIZE = 5

_TOKEN_TABLE = np.full(256, GAP_ID, dtype=np.uint8)
for _i, _c in enumerate(VOCAB):
    _TOKEN_TABLE[ord(_c)] = _i
    _TOKEN_TABLE[ord(_c.lower())] = _i
_COMPLEMENT = np.arange(256, dtype=np.uint8)
for _a, _b in zip("ACGTacgt", "TGCAtgca", strict=True):
    _COMPLEMENT[ord(_a)] = ord(_b)


def tokenize(ascii_bytes: np.ndarray) -> np.ndarray:
    """Map ASCII bases (``uint8`` or ``S1`` array, any shape) to GPN-MSA token ids.

    Case is ignored; anything outside ``-ACGT?`` (``N``, ``.``) becomes the gap token ``0``.
    """
    arr = np.asarray(ascii_bytes)
    if arr.dtype.kind == "S":
        arr = arr.view(np.uint8)
    if arr.dtype != np.uint8:
        raise TypeError(f"`ascii_bytes` must be uint8 or S1, got dtype {arr.dtype}.")
    return _TOKEN_TABLE[arr]


def reverse_complement(ascii_bytes: np.ndarray, position_axis: int = 0) -> np.ndarray:
    """Reverse along ``position_axis`` and complement A/C/G/T (case kept; others unchanged)."""
    arr = np.asarray(ascii_bytes)
    if arr.dtype.kind == "S":
        arr = arr.view(np.uint8)
    return _COMPLEMENT[np.flip(arr, axis=position_axis)]


# --------------------------------------------------------------------------------------------
# Genome MSA store
# --------------------------------------------------------------------------------------------


class GenomeMSA:
    """Reader of a GPN-MSA genome alignment stored as Zarr (one ``(L, 1 + S)`` array per chrom).

    Parameters
    ----------
    path
        Path of the Zarr group (e.g. ``89.zarr``).
    subset_chroms
        Only these chromosomes (default: all arrays of the group).
    in_memory
        Load the arrays into NumPy (fast random access; fine for small stores and for the
        synthetic genome) instead of reading slices from disk.
    """

    def __init__(
        self, path: str | os.PathLike, subset_chroms: Sequence[str] | None = None, *, in_memory=True
    ):
        import zarr

        if not Path(path).exists():
            raise ValueError(f"`path` {str(path)!r} does not exist (expected a Zarr genome MSA).")
        group = zarr.open_group(str(path), mode="r")
        chroms = sorted(group.array_keys())
        if subset_chroms is not None:
            missing = sorted(set(map(str, subset_chroms)) - set(chroms))
            if missing:
                raise ValueError(f"`subset_chroms` {missing} are not in the MSA store {path}.")
            chroms = [c for c in chroms if c in set(map(str, subset_chroms))]
        if not chroms:
            raise ValueError(f"the MSA store {path} holds no chromosome arrays.")
        self.data = {c: (group[c][:] if in_memory else group[c]) for c in chroms}
        shapes = {c: a.shape for c, a in self.data.items()}
        widths = {s[1] for s in shapes.values() if len(s) == 2}
        if len(widths) != 1 or any(len(s) != 2 for s in shapes.values()):
            raise ValueError(f"every chromosome array must be (L, 1 + n_species); got {shapes}.")
        self.n_rows = widths.pop()
        if self.n_rows < 2:
            raise ValueError("the MSA needs the human column plus at least one other species.")
        self.chrom_sizes = {c: int(s[0]) for c, s in shapes.items()}

    @property
    def n_species(self) -> int:
        """Number of aligned species besides human (``n_aux_features / 5`` of the model)."""
        return self.n_rows - 1

    def get_msa(self, chrom: str, start: int, end: int, strand: str = "+") -> np.ndarray:
        """ASCII ``uint8`` array ``(end - start, 1 + n_species)`` of the window.

        Positions outside the chromosome are padded with ``-`` (gap); ``strand="-"`` returns
        the reverse complement (GPN-MSA trains on both strands).
        """
        if chrom not in self.data:
            raise ValueError(f"chromosome {chrom!r} is not in the MSA (have {list(self.data)}).")
        if end <= start:
            raise ValueError(f"window end ({end}) must exceed start ({start}).")
        if strand not in ("+", "-"):
            raise ValueError(f"`strand` must be '+' or '-', got {strand!r}.")
        size = self.chrom_sizes[chrom]
        lo, hi = max(start, 0), min(end, size)
        out = np.full((end - start, self.n_rows), ord("-"), dtype=np.uint8)
        if hi > lo:
            out[lo - start : hi - start] = np.asarray(self.data[chrom][lo:hi]).view(np.uint8)
        if strand == "-":
            out = reverse_complement(out, position_axis=0)
        return out


# --------------------------------------------------------------------------------------------
# Windows
# --------------------------------------------------------------------------------------------


def _max_smooth(x: np.ndarray, width: int = 7) -> np.ndarray:
    """Running maximum over ``width`` positions (zero padding), as GPN-MSA smooths phastCons."""
    half = width // 2
    padded = np.pad(x, (half, half), constant_values=0.0)
    return np.lib.stride_tricks.sliding_window_view(padded, width).max(axis=-1)


class MSAWindowDataset(torch.utils.data.Dataset):
    """Training windows: human tokens, auxiliary MSA tokens and GPN-MSA loss weights.

    Every item is a dict with ``input_ids`` ``(L,)`` (human tokens, ids of ``-ACGT?``),
    ``aux_features`` ``(L, n_species)`` (tokens of the other species), ``loss_weight`` ``(L,)``
    and ``flip_p`` ``(L,)`` (probability that a masked label is replaced by a random base).

    Loss weights follow GPN-MSA's training script: soft-masked (lowercase) human positions get
    ``soft_masked_weight`` (0.1 in GPN-MSA); with conservation tracks present and
    ``weight_conserved``, weights are multiplied by ``max(phyloP, 1)`` and ``0.1 + phastCons``
    (phastCons max-smoothed over 7 bp); with ``flip_nonconserved``, labels at positions with
    smoothed phastCons < 0.1 are flipped to a random base with probability 0.5. Windows without
    these columns (the synthetic data) get weight one and no flipping.

    Parameters
    ----------
    windows
        Table with columns ``chrom``, ``start``, ``end``, ``strand`` (a ``pandas.DataFrame`` or a
        ``datasets.Dataset``), optionally ``lowercase``, ``phastCons``, ``phyloP``.
    genome_msa
        The :class:`GenomeMSA`.
    soft_masked_weight, weight_conserved, flip_nonconserved
        See above.
    """

    def __init__(
        self,
        windows,
        genome_msa: GenomeMSA,
        *,
        soft_masked_weight: float = 0.1,
        weight_conserved: bool = True,
        flip_nonconserved: bool = True,
    ):
        columns = list(windows.columns) if hasattr(windows, "columns") else windows.column_names
        missing = {"chrom", "start", "end", "strand"} - set(columns)
        if missing:
            raise ValueError(f"`windows` lacks column(s) {sorted(missing)}; has {columns}.")
        if not isinstance(genome_msa, GenomeMSA):
            raise TypeError(f"`genome_msa` must be a GenomeMSA, got {type(genome_msa).__name__}.")
        if not 0.0 <= float(soft_masked_weight) <= 1.0:
            raise ValueError(f"`soft_masked_weight` must lie in [0, 1], got {soft_masked_weight}.")
        self.windows = windows.reset_index(drop=True) if hasattr(windows, "iloc") else windows
        self.genome_msa = genome_msa
        self.soft_masked_weight = float(soft_masked_weight)
        self.has_conservation = {"phastCons", "phyloP"} <= set(columns)
        self.weight_conserved = bool(weight_conserved) and self.has_conservation
        self.flip_nonconserved = bool(flip_nonconserved) and self.has_conservation

    def __len__(self) -> int:
        return len(self.windows)

    def _row(self, i: int) -> dict:
        if hasattr(self.windows, "iloc"):
            return self.windows.iloc[int(i)].to_dict()
        return self.windows[int(i)]

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        row = self._row(i)
        msa = self.genome_msa.get_msa(
            str(row["chrom"]), int(row["start"]), int(row["end"]), row["strand"]
        )
        tokens = tokenize(msa)
        length = tokens.shape[0]
        weight = np.ones(length, dtype=np.float32)
        soft = (msa[:, 0] >= ord("a")) & (msa[:, 0] <= ord("z"))
        if "lowercase" in row and row["lowercase"] is not None:
            soft = np.broadcast_to(np.asarray(row["lowercase"], dtype=bool), (length,))
        weight[soft] *= self.soft_masked_weight
        flip = np.zeros(length, dtype=np.float32)
        if self.has_conservation:
            phast = _max_smooth(np.nan_to_num(np.asarray(row["phastCons"], dtype=float)), 7)
            phylo = np.asarray(row["phyloP"], dtype=float)
            if self.weight_conserved:
                weight *= np.fmax(phylo, 1.0).astype(np.float32)  # fmax ignores NaN
                weight *= (0.1 + phast).astype(np.float32)
            if self.flip_nonconserved:
                flip = (0.5 * (phast < 0.1)).astype(np.float32)
        return {
            "input_ids": torch.from_numpy(tokens[:, 0].astype(np.int64)),
            "aux_features": torch.from_numpy(np.ascontiguousarray(tokens[:, 1:])),
            "loss_weight": torch.from_numpy(weight),
            "flip_p": torch.from_numpy(flip),
        }


def collate_windows(items: list[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    """Stack equal-length window items into a mini-batch (no padding, as in GPN-MSA)."""
    return {key: torch.stack([it[key] for it in items]) for key in items[0]}


def load_gpn_msa_windows(
    dataset: str | os.PathLike,
    msa_path: str | os.PathLike,
    split: str = "train",
    *,
    cache_dir: str | os.PathLike | None = None,
    in_memory: bool = False,
    **dataset_options,
) -> MSAWindowDataset:
    """Open a GPN-MSA training split: windows from a HF dataset, sequences from the Zarr MSA.

    Parameters
    ----------
    dataset
        Hub name (``"songlab/gpn-msa-sapiens-dataset"``) or a local folder laid out like it
        (``data/train-*.parquet``, ``data/validation-*.parquet``, ...). Hub names need network.
    msa_path
        The genome MSA Zarr store (``89.zarr``).
    split
        Dataset split.
    cache_dir
        ``datasets`` cache directory.
    in_memory
        Load the whole MSA into memory (see :class:`GenomeMSA`).
    **dataset_options
        Passed to :class:`MSAWindowDataset` (``soft_masked_weight``, ``weight_conserved``,
        ``flip_nonconserved``).

    Returns
    -------
    The window dataset.
    """
    import datasets

    if not isinstance(split, str):
        raise TypeError(f"`split` must be a string, got {type(split).__name__}.")
    if not Path(msa_path).exists():
        raise ValueError(f"`msa_path` {str(msa_path)!r} does not exist.")
    windows = datasets.load_dataset(
        str(dataset), split=split, cache_dir=None if cache_dir is None else str(cache_dir)
    )
    chroms = sorted(set(map(str, windows.unique("chrom"))))
    genome = GenomeMSA(msa_path, subset_chroms=chroms, in_memory=in_memory)
    return MSAWindowDataset(windows, genome, **dataset_options)


def make_windows(
    chrom_sizes: dict[str, int], window_size: int = 128, step: int = 64, add_rc: bool = True
) -> pd.DataFrame:
    """Tile chromosomes into windows (``chrom, start, end, strand``), both strands if ``add_rc``."""
    if window_size < 2 or step < 1:
        raise ValueError(f"need window_size >= 2 and step >= 1, got {window_size}, {step}.")
    frames = []
    for chrom, size in chrom_sizes.items():
        starts = np.arange(0, size - window_size + 1, step)
        for strand in ("+", "-") if add_rc else ("+",):
            frames.append(
                pd.DataFrame(
                    {"chrom": chrom, "start": starts, "end": starts + window_size, "strand": strand}
                )
            )
    return pd.concat(frames, ignore_index=True)


# --------------------------------------------------------------------------------------------
# Synthetic MSA generator
# --------------------------------------------------------------------------------------------

#: region classes of the synthetic genome and their evolutionary constraint:
#: (share of segments, fraction of constrained sites, rate multiplier at constrained sites)
REGION_CLASSES: dict[str, tuple[float, float, float]] = {
    "intergenic": (0.40, 0.05, 0.15),
    "coding": (0.24, 0.0, 0.03),  # codon positions 1-2 constrained, see simulate_genome_msa
    "5'UTR": (0.12, 0.45, 0.06),
    "3'UTR": (0.12, 0.30, 0.25),
    "ncRNA": (0.12, 0.30, 0.12),
}


@dataclass
class SyntheticMSAConfig:
    """Settings of :func:`simulate_genome_msa` (see README.md for the model).

    Attributes
    ----------
    n_species
        Aligned species besides human.
    chroms
        Chromosome names; the last one is held out (validation windows and variants).
    chrom_length
        Length of each chromosome (bp).
    tree_depth
        Expected neutral substitutions per site from the root to a leaf.
    mean_segment
        Mean length of a region segment (geometric).
    mean_element
        Mean length of a constrained element inside UTR / ncRNA / intergenic segments.
    gap_block, gap_rate
        Every species misses (``-``) each ``gap_block``-bp block with probability ``gap_rate``.
    gc
        GC content of the root sequence.
    seed
        Random seed.
    """

    n_species: int = 10
    chroms: tuple[str, ...] = ("1", "2", "3")
    chrom_length: int = 60_000
    tree_depth: float = 0.5
    mean_segment: int = 400
    mean_element: int = 12
    gap_block: int = 50
    gap_rate: float = 0.03
    gc: float = 0.42
    seed: int = 0
    region_classes: dict = field(default_factory=lambda: dict(REGION_CLASSES))

    def validate(self) -> None:
        """Raise ``ValueError`` for out-of-range settings."""
        if self.n_species < 1:
            raise ValueError(f"`n_species` must be at least 1, got {self.n_species}.")
        if len(self.chroms) < 2:
            raise ValueError("`chroms` needs at least two chromosomes (train + held out).")
        if self.chrom_length < 1000:
            raise ValueError(f"`chrom_length` must be at least 1000, got {self.chrom_length}.")
        if not (self.tree_depth > 0 and math.isfinite(self.tree_depth)):
            raise ValueError(f"`tree_depth` must be positive, got {self.tree_depth}.")
        if not 0.0 <= self.gap_rate < 1.0 or not 0.0 < self.gc < 1.0:
            raise ValueError("`gap_rate` must lie in [0, 1) and `gc` in (0, 1).")


def simulate_species_tree(
    n_leaves: int, depth: float, rng: np.random.Generator, *, human_outgroup: float = 0.5
) -> list[tuple[int, int, float]]:
    """Random species tree: human (leaf 0) as outgroup of a coalescent tree of the others.

    The other ``n_leaves - 1`` species form a Kingman-coalescent tree of height
    ``human_outgroup * depth``; it joins human at the root, at height ``depth``. So human is
    at neutral distance ``2 * depth`` from every other species (like GPN-MSA's alignment, from
    which the closest primates were removed so that the model cannot just copy a near-identical
    relative), while the other species share a structured phylogeny.

    Returns
    -------
    Edges ``(child, parent, branch_length)`` listed from the root down (parents before
    children); leaves are nodes ``0 .. n_leaves - 1``.
    """
    if n_leaves < 2:
        raise ValueError(f"`n_leaves` must be at least 2, got {n_leaves}.")
    if not 0.0 < human_outgroup < 1.0:
        raise ValueError(f"`human_outgroup` must lie in (0, 1), got {human_outgroup}.")
    lineages = list(range(1, n_leaves))
    height = dict.fromkeys(lineages, 0.0)
    t, next_id, edges = 0.0, n_leaves, []
    while len(lineages) > 1:
        k = len(lineages)
        t += rng.exponential(2.0 / (k * (k - 1)))
        a, b = rng.choice(len(lineages), size=2, replace=False)
        for child in (lineages[a], lineages[b]):
            edges.append((child, next_id, t - height[child]))
        height[next_id] = t
        lineages = [x for j, x in enumerate(lineages) if j not in (a, b)] + [next_id]
        next_id += 1
    sub_height = human_outgroup * depth
    scale = sub_height / t if t > 0 else 0.0
    edges = [(c, p, bl * scale) for c, p, bl in edges]
    root = next_id
    edges += [(lineages[0], root, depth - sub_height), (0, root, depth)]
    return list(reversed(edges))


def _segments(length: int, mean: float, rng: np.random.Generator) -> list[tuple[int, int]]:
    bounds, pos = [], 0
    while pos < length:
        size = int(rng.geometric(1.0 / mean))
        bounds.append((pos, min(pos + size, length)))
        pos += size
    return bounds


def simulate_genome_msa(config: SyntheticMSAConfig | None = None) -> dict:
    """Evolve a genome MSA along a species tree with position-specific conservation.

    Parameters
    ----------
    config
        Generator settings (defaults: :class:`SyntheticMSAConfig`).

    Returns
    -------
    Dict with ``msa`` (chrom -> ASCII ``uint8`` ``(L, 1 + n_species)``, column 0 human, the
    GPN-MSA store layout), ``region`` (chrom -> region-class index per site), ``constrained``
    (chrom -> bool per site), ``rate`` (chrom -> substitution-rate multiplier per site),
    ``classes`` (the region class names), ``tree`` (edges) and ``config``.
    """
    config = config or SyntheticMSAConfig()
    if not isinstance(config, SyntheticMSAConfig):
        raise TypeError(f"`config` must be a SyntheticMSAConfig, got {type(config).__name__}.")
    config.validate()
    rng = np.random.default_rng(config.seed)
    n_leaves = config.n_species + 1
    tree = simulate_species_tree(n_leaves, config.tree_depth, rng)
    classes = list(config.region_classes)
    shares = np.array([config.region_classes[c][0] for c in classes], dtype=float)
    shares /= shares.sum()
    bases = np.frombuffer(b"ACGT", dtype=np.uint8)
    out = {"msa": {}, "region": {}, "constrained": {}, "rate": {}}
    for chrom in config.chroms:
        length = config.chrom_length
        region = np.zeros(length, dtype=np.int8)
        constrained = np.zeros(length, dtype=bool)
        for lo, hi in _segments(length, config.mean_segment, rng):
            k = int(rng.choice(len(classes), p=shares))
            region[lo:hi] = k
            name = classes[k]
            if name == "coding":  # codon positions 1 and 2 under constraint, 3 mostly free
                codon = (np.arange(lo, hi) - lo) % 3
                constrained[lo:hi] = (codon < 2) | (rng.random(hi - lo) < 0.1)
            else:  # constrained elements covering the class's fraction of the segment
                frac = config.region_classes[name][1]
                for elo, ehi in _segments(hi - lo, config.mean_element, rng):
                    if rng.random() < frac:
                        constrained[lo + elo : lo + ehi] = True
        strength = np.array([config.region_classes[c][2] for c in classes])[region]
        # neutral sites: gamma-distributed rate heterogeneity with mean one
        rate = np.where(constrained, strength, rng.gamma(2.0, 0.5, size=length))
        gc = rng.random(length) < config.gc
        root = np.where(gc, rng.choice([1, 2], size=length), rng.choice([0, 3], size=length))
        seqs = {tree[0][1]: root.astype(np.int8)}
        for child, parent, branch in tree:  # JC69 along each branch
            p_change = 0.75 * (1.0 - np.exp(-4.0 / 3.0 * rate * branch))
            change = rng.random(length) < p_change / 0.75  # any of 4 bases, incl. the same one
            new = seqs[parent].copy()
            new[change] = rng.integers(0, 4, size=int(change.sum()))
            seqs[child] = new
        msa = bases[np.stack([seqs[leaf] for leaf in range(n_leaves)], axis=1)].copy()
        n_blocks = math.ceil(length / config.gap_block)
        missing = rng.random((n_blocks, config.n_species)) < config.gap_rate
        missing = np.repeat(missing, config.gap_block, axis=0)[:length]
        msa[:, 1:][missing] = ord("-")
        out["msa"][chrom] = msa
        out["region"][chrom] = region
        out["constrained"][chrom] = constrained
        out["rate"][chrom] = rate
    out.update(classes=classes, tree=tree, config=config)
    return out


def write_genome_msa_zarr(
    msa: dict[str, np.ndarray], path: str | os.PathLike, zarr_format: int = 2
) -> Path:
    """Write chrom -> ``(L, 1 + S)`` ASCII arrays as a GPN-MSA style Zarr group."""
    import zarr

    group = zarr.open_group(str(path), mode="w", zarr_format=zarr_format)
    for chrom, arr in msa.items():
        arr = np.asarray(arr)
        if arr.dtype.kind == "S":
            arr = arr.view(np.uint8)
        if arr.ndim != 2 or arr.dtype != np.uint8:
            raise ValueError(f"MSA of {chrom!r} must be a 2-d uint8/S1 array, got {arr.dtype}.")
        group.create_array(str(chrom), data=arr, chunks=(min(len(arr), 65536), arr.shape[1]))
    return Path(path)


def make_variant_sets(
    genome: dict,
    chrom: str,
    *,
    window_size: int = 128,
    n_missense: int = 300,
    n_regulatory_pathogenic: int = 30,
    benign_per_pathogenic: int = 20,
    seed: int = 0,
) -> pd.DataFrame:
    """Synthetic pathogenic / benign variant sets in the layout of Table 3.

    ``"missense"`` (the ClinVar-like set): ``n_missense`` pathogenic variants at constrained
    coding sites against as many benign ones at unconstrained coding sites. ``"regulatory"``
    (the OMIM-like, imbalanced set): for each of 5'UTR, 3'UTR and ncRNA,
    ``n_regulatory_pathogenic`` pathogenic variants at constrained sites against
    ``benign_per_pathogenic`` times as many at unconstrained sites of the same class. The
    alternate allele is a random base different from the human reference.

    Returns
    -------
    DataFrame with ``chrom, pos`` (1-based), ``ref, alt, label`` (1 = pathogenic),
    ``class`` and ``set``.
    """
    if chrom not in genome["msa"]:
        raise ValueError(f"`chrom` {chrom!r} is not in the synthetic genome.")
    rng = np.random.default_rng(seed)
    msa = genome["msa"][chrom]
    human = msa[:, 0]
    length = len(human)
    half = window_size // 2
    ok = np.zeros(length, dtype=bool)
    ok[half : length - half] = True
    ok &= np.isin(human, np.frombuffer(b"ACGT", dtype=np.uint8))
    region, constrained = genome["region"][chrom], genome["constrained"][chrom]
    classes = genome["classes"]
    rows = []

    def draw(candidates: np.ndarray, n: int, label: int, cls: str, set_name: str) -> None:
        idx = np.flatnonzero(candidates)
        if len(idx) < n:
            raise ValueError(
                f"only {len(idx)} candidate sites for {n} {cls} variants on {chrom!r}; "
                "use a longer chromosome."
            )
        for site in rng.choice(idx, size=n, replace=False):
            ref = chr(human[site])
            alt = rng.choice([b for b in "ACGT" if b != ref])
            rows.append((chrom, int(site) + 1, ref, alt, label, cls, set_name))

    coding = ok & (region == classes.index("coding"))
    draw(coding & constrained, n_missense, 1, "missense", "missense")
    draw(coding & ~constrained, n_missense, 0, "missense", "missense")
    for cls in ("5'UTR", "3'UTR", "ncRNA"):
        in_cls = ok & (region == classes.index(cls))
        draw(in_cls & constrained, n_regulatory_pathogenic, 1, cls, "regulatory")
        n_benign = n_regulatory_pathogenic * benign_per_pathogenic
        draw(in_cls & ~constrained, n_benign, 0, cls, "regulatory")
    cols = ["chrom", "pos", "ref", "alt", "label", "class", "set"]
    return pd.DataFrame(rows, columns=cols).sort_values(["chrom", "pos"], ignore_index=True)


def prepare_synthetic_data(
    out_dir: str | os.PathLike,
    config: SyntheticMSAConfig | None = None,
    *,
    window_size: int = 128,
    window_step: int = 64,
    **variant_options,
) -> dict:
    """Write a synthetic genome in the real GPN-MSA layouts and return the paths.

    Creates ``msa.zarr`` (genome MSA), ``windows/data/{train,validation}-00000.parquet`` (a
    local HF dataset: training windows on every chromosome but the last, validation windows on
    the last) and ``variants.parquet`` (:func:`make_variant_sets` on the last chromosome), so
    that training and scoring go through :func:`load_gpn_msa_windows` exactly as with real data.
    """
    config = config or SyntheticMSAConfig()
    genome = simulate_genome_msa(config)
    out = Path(out_dir)
    (out / "windows" / "data").mkdir(parents=True, exist_ok=True)
    write_genome_msa_zarr(genome["msa"], out / "msa.zarr")
    sizes = {c: len(a) for c, a in genome["msa"].items()}
    held_out = config.chroms[-1]
    train = make_windows(
        {c: s for c, s in sizes.items() if c != held_out}, window_size, window_step
    )
    valid = make_windows({held_out: sizes[held_out]}, window_size, window_size, add_rc=False)
    train.to_parquet(out / "windows" / "data" / "train-00000.parquet", index=False)
    valid.to_parquet(out / "windows" / "data" / "validation-00000.parquet", index=False)
    variants = make_variant_sets(genome, held_out, window_size=window_size, **variant_options)
    variants.to_parquet(out / "variants.parquet", index=False)
    cfg = {k: (list(v) if isinstance(v, tuple) else v) for k, v in asdict(config).items()}
    pd.Series({k: str(v) for k, v in cfg.items()}).to_json(out / "config.json")
    return {
        "msa": out / "msa.zarr",
        "windows": out / "windows",
        "variants": out / "variants.parquet",
        "genome": genome,
    }
