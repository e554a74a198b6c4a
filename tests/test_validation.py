"""The count check: raw and ambient-corrected counts pass, normalised or log data is refused."""

import re
import warnings

import numpy as np
import pytest
import scanpy as sc
from anndata import AnnData
from scipy import sparse

from scr2mae._validation import N_MEASURED_KEY, check_count_matrix


def _counts(n_cells=300, n_genes=400, seed=0) -> np.ndarray:
    """Poisson counts with cell-to-cell depth in the hundreds to thousands."""
    rng = np.random.default_rng(seed)
    profile = rng.gamma(0.3, 1.0, n_genes)
    profile /= profile.sum()
    library = rng.integers(500, 5000, (n_cells, 1))
    counts = rng.poisson(profile * library).astype(np.float64)
    counts[:, 0] += 1  # no empty cell
    counts[np.arange(n_genes) % n_cells, np.arange(n_genes)] += 1  # no empty gene
    return counts


def _soupx_like(counts: np.ndarray, rho: float = 0.1) -> np.ndarray:
    """Subtract each cell's expected ambient share, gene by gene (non-integer, non-negative)."""
    soup = counts.sum(0) / counts.sum()
    out = np.clip(counts - rho * counts.sum(1, keepdims=True) * soup, 0.0, None)
    out[counts == 0] = 0.0
    return out


def _with_layer(matrix, layer="counts") -> AnnData:
    adata = AnnData(X=np.ones(matrix.shape, dtype=np.float32))
    adata.layers[layer] = matrix
    return adata


def _check(matrix, layer="counts", **kwargs):
    """Run the check; return the messages of the warnings it gave."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        check_count_matrix(_with_layer(matrix, layer), layer, **kwargs)
    return [str(w.message) for w in caught if issubclass(w.category, UserWarning)]


def test_integer_counts_pass_silently():
    assert _check(sparse.csr_matrix(_counts().astype(np.float32))) == []


@pytest.mark.parametrize("storage", [np.asarray, sparse.csr_matrix])
def test_ambient_corrected_counts_pass_with_a_warning_that_counts_them(storage):
    corrected = _soupx_like(_counts()).astype(np.float32)
    n_nonzero = int(np.count_nonzero(corrected))
    n_fractional = int(np.count_nonzero(corrected != np.round(corrected)))
    assert n_fractional > 0.9 * n_nonzero  # nearly every entry moved
    (message,) = _check(storage(corrected), where="setup_anndata")
    assert message.startswith("setup_anndata: adata.layers['counts'] holds non-integer counts")
    assert f"{n_fractional:,} of {n_nonzero:,} non-zero values" in message
    assert "ambient RNA" in message


def test_mostly_integer_counts_with_a_few_corrected_entries_pass():
    counts = _counts()
    rng = np.random.default_rng(1)
    corrected = np.where(rng.random(counts.shape) < 0.02, counts * 0.9, counts)
    n_fractional = int(np.count_nonzero(corrected != np.round(corrected)))
    (message,) = _check(sparse.csr_matrix(corrected), layer="denoised")
    assert f"adata.layers['denoised'] holds non-integer counts: {n_fractional:,} of " in message
    # and a single non-integer value is counted, too
    counts[0, 0] = 1.5
    (message,) = _check(counts)
    assert f"1 of {np.count_nonzero(counts):,} non-zero values" in message
    assert "e.g. 1.5" in message


def _normalised(counts, target_sum=1e4, log=False, keep_genes=None) -> np.ndarray:
    adata = AnnData(X=sparse.csr_matrix(counts.astype(np.float32)))
    sc.pp.normalize_total(adata, target_sum=target_sum)
    if log:
        sc.pp.log1p(adata)
    x = adata.X
    return x if keep_genes is None else x[:, keep_genes]


@pytest.mark.parametrize(
    ("transform", "match"),
    [
        (lambda c: _normalised(c, log=True), r"looks log-normalised: .*log1p"),
        (lambda c: _normalised(c), r"looks normalised: every cell sums to 10000"),
        (lambda c: _normalised(c, target_sum=None), r"looks normalised: every cell sums to \d+"),
        # after a gene subset the totals differ; the values are still multiples of a unit
        (lambda c: _normalised(c, keep_genes=slice(0, 200)), r"looks normalised: .*multiples"),
        (lambda c: _normalised(c, target_sum=1e6, keep_genes=slice(0, 200)), "multiples"),
        (lambda c: _normalised(c, log=True, keep_genes=slice(0, 200)), "log-normalised"),
        (lambda c: np.log1p(c), r"looks log-normalised: .*log1p"),
        (lambda c: np.log2(c / c.sum(1, keepdims=True) * 1e6 + 1), r"log2\(1 \+ x\)"),
        # log of ambient-corrected counts, or rounded log values: no exact unit, but the range
        # of log data
        (lambda c: np.log1p(_soupx_like(c)), r"looks log-transformed: no value exceeds"),
        (lambda c: np.round(_normalised(c, log=True).toarray(), 2), "looks log-transformed"),
    ],
    ids=[
        "log1p_cp10k",
        "cp10k",
        "median_total",
        "cp10k_gene_subset",
        "cpm_gene_subset",
        "log1p_cp10k_gene_subset",
        "log1p_raw",
        "log2_cpm",
        "log1p_ambient",
        "log1p_cp10k_rounded",
    ],
)
def test_normalised_or_log_data_is_refused(transform, match):
    with pytest.raises(ValueError, match=match) as err:
        _check(transform(_counts()))
    message = str(err.value)
    assert message.startswith("adata.layers['counts'] looks ")
    assert "Pass raw counts" in message


def test_scanpy_log_normalised_pbmc_is_refused():
    """scanpy's own log-normalised values (pbmc68k_reduced .raw.X), as `.X` beside the counts."""
    from scr2mae.data import pbmc68k_counts

    adata = pbmc68k_counts()
    with pytest.raises(ValueError, match=r"^adata\.X looks log-normalised"):
        check_count_matrix(adata, None)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        check_count_matrix(adata, "counts")


def test_negative_values_name_the_layer():
    counts = _counts()
    counts[3, 4] = -2.0
    with pytest.raises(ValueError, match=re.escape("adata.layers['raw'] contains negative values")):
        _check(counts, layer="raw")
    with pytest.raises(ValueError, match=r"^adata\.X contains negative values \(min -2\)"):
        check_count_matrix(AnnData(X=counts), None)


def test_integer_only_callers_refuse_any_non_integer_value():
    corrected = _soupx_like(_counts())
    n_fractional = int(np.count_nonzero(corrected != np.round(corrected)))
    with pytest.raises(
        ValueError, match=f"non-integer values: {n_fractional:,} of .*required here"
    ):
        _check(corrected, where="Census", allow_non_integer=False)


def test_nan_infinite_and_empty_cells_still_refused_empty_genes_warned():
    counts = _soupx_like(_counts())
    nan = counts.copy()
    nan[2, 5] = np.nan
    with pytest.raises(ValueError, match=r"adata.layers\['counts'\] contains 1 NaN value"):
        _check(nan)
    # a prepared query stores no NaN (its panels record the unmeasured genes): the column it
    # writes does not make NaN acceptable
    prepared = _with_layer(nan)
    prepared.obs[N_MEASURED_KEY] = counts.shape[1]
    with pytest.raises(ValueError, match=r"NaN.*nan_as_unmeasured=True"):
        check_count_matrix(prepared, "counts")
    # only a caller that reads NaN as unmeasured accepts them; the rest is checked as usual
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        check_count_matrix(prepared, "counts", allow_unmeasured=True)
    assert any("non-integer counts" in str(w.message) for w in caught)
    inf = counts.copy()
    inf[0, 0] = np.inf
    with pytest.raises(ValueError, match="infinite"):
        _check(inf)
    empty = counts.copy()
    empty[7] = 0.0
    with pytest.raises(ValueError, match=r"1 cell\(s\) without any counts"):
        _check(empty)
    silent_gene = counts.copy()
    silent_gene[:, 9] = 0.0
    messages = _check(silent_gene)
    assert any("1 gene(s) without any counts" in m for m in messages)
